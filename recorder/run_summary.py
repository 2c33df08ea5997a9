"""What a run shows its users at a glance: a row per file, a summary of the run, and its
progress while recording. Plain data and text here; flows/artifacts.py publishes them as
Prefect artifacts. Nothing in them is secret: no UserSig, no keys, no callback query."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from recorder.callback import describe_url
from recorder.media.capture import segment_files
from recorder.media.pieces import TranscodeReport
from recorder.recording import RECONNECTING_FILE
from recorder.request import MODE_NAMES, RecordingRequest
from recorder.result import FileEntry
from recorder.workspace import Take

MB = 1_000_000


class FilePreviews(BaseModel):
    """The previews stored beside one file, and why any is missing."""

    urls: list[str] = []
    problems: list[str] = []


class FileRow(BaseModel):
    """One row of the run's "Recorded files" table."""

    anchor: str
    mode: str
    seconds: float
    size_bytes: int
    codecs: str
    resolution: str
    status: int
    message: str
    link: str
    previews: str


def file_rows(
    mode: str,
    entries: list[FileEntry],
    reports: list[TranscodeReport] | None,
    previews: list[FilePreviews] | None,
) -> list[FileRow]:
    """The rows of one take: its entries, with what the conversion and the previews tell.
    A take cut into pieces has one entry, report and previews per piece, in order."""
    rows = []
    for n, entry in enumerate(entries):
        report = reports[n] if reports is not None and len(reports) == len(entries) else None
        shown = previews[n] if previews is not None and len(previews) == len(entries) else None
        rows.append(
            FileRow(
                anchor=entry.UserId,
                mode=mode,
                seconds=round(report.seconds, 2) if report else 0.0,
                size_bytes=report.size_bytes if report and entry.Status == 1 else 0,
                codecs=", ".join(report.streams) if report else "",
                resolution=report.resolution if report else "",
                status=entry.Status,
                message=entry.Message,
                link=entry.RecordFile,
                previews=_previews_cell(entry, shown),
            )
        )
    return rows


def _previews_cell(entry: FileEntry, previews: FilePreviews | None) -> str:
    if entry.Status != 1:
        return ""
    if previews is None:
        return "none made"
    return " ".join([*previews.urls, *previews.problems]) or "none made"


def summary_markdown(
    request: RecordingRequest,
    storage_label: str,
    started_at: datetime,
    ended_at: datetime,
    stop_reason: str,
    rows: list[FileRow],
) -> str:
    """The run in a few lines: the room, who was recorded, why it stopped, what came out."""
    room = f"RoomId {request.RoomId}" if request.RoomId is not None else f"StrRoomId {request.StrRoomId}"
    ok = [r for r in rows if r.status == 1]
    lines = [
        f"# Recording of room {request.room}",
        "",
        f"- **Room:** {room} of SdkAppId {request.SdkAppId}, joined as `{request.UserId}`",
        f"- **Mode:** {request.Mode} ({MODE_NAMES[request.Mode]}), files to {storage_label}"
        + (f" under `{request.CosConfig.Path}`" if request.CosConfig.Path != "/" else ""),
        f"- **When:** {_stamp(started_at)} to {_stamp(ended_at)} ({_duration(ended_at - started_at)})",
        f"- **Why it stopped:** {stop_reason}",
        f"- **Files:** {len(ok)} of {len(rows)} stored",
    ]
    if request.Callback is not None:
        lines.append(f"- **Callback:** {describe_url(str(request.Callback))}")
    lines += ["", "| anchor | files | recorded | size | status |", "|---|---|---|---|---|"]
    for anchor in dict.fromkeys(r.anchor for r in rows):
        mine = [r for r in rows if r.anchor == anchor]
        failed = [r for r in mine if r.status != 1]
        status = "ok" if not failed else "; ".join(r.message for r in failed)
        seconds = sum(r.seconds for r in mine)
        size = sum(r.size_bytes for r in mine) / MB
        lines.append(f"| {_cell(anchor)} | {len(mine)} | {seconds:.1f} s | {size:.1f} MB | {_cell(status)} |")
    return "\n".join(lines) + "\n"


@dataclass
class TakeProgress:
    anchor: str
    seconds: float  # since the take started
    bytes: int  # recorded so far (its segments on disk)
    state: str  # recording, waiting for the stream, ended


def take_progress(take: Take, folder: Path, ended: bool) -> TakeProgress:
    """How far one take is, read from its folder, so any process can tell: its bytes on
    disk, and the time from its start to its newest segment's last write (which is now
    while it records, and its end once it has ended)."""
    size, newest = 0, None
    try:
        for segment in segment_files(folder):
            status = segment.stat()
            size += status.st_size
            newest = status.st_mtime if newest is None else max(newest, status.st_mtime)
    except OSError:  # a segment removed while counting: the take is being cleaned up
        pass
    seconds = max(0.0, newest - take.started_at.timestamp()) if newest is not None else 0.0
    if ended:
        state = "ended"
    elif (folder / RECONNECTING_FILE).exists():
        state = "waiting for the stream to come back"
    else:
        state = "recording"
    return TakeProgress(take.anchor, seconds, size, state)


def progress_markdown(room: str, elapsed: float, takes: list[TakeProgress], phase: str) -> str:
    """The progress artifact's text: elapsed time, and each anchor's time and bytes."""
    total = sum(t.bytes for t in takes) / MB
    lines = [
        f"Room {room}: {phase}, {_clock(elapsed)} elapsed, {len(takes)} take(s), {total:.1f} MB recorded",
        "",
        "| anchor | recorded | size | state |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(t.anchor)} | {_clock(t.seconds)} | {t.bytes / MB:.1f} MB | {t.state} |" for t in takes
    ]
    return "\n".join(lines) + "\n"


class Throttle:
    """True at most once every `seconds` (the first call included)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._next = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._seconds
        return True


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _duration(span: timedelta) -> str:
    return _clock(span.total_seconds())
