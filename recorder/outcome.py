"""One anchor's journey through the steps, summed up as its entry in the result document."""

from __future__ import annotations

from dataclasses import dataclass, replace

from recorder.media.transcode import TranscodeReport
from recorder.recording import Recording
from recorder.result import FileEntry


@dataclass
class StepFailure:
    """A step that did not complete, and why (the exception's message, no traceback)."""

    reason: str


def file_entry(
    anchor: str,
    recorded: Recording | StepFailure | None,
    converted: TranscodeReport | StepFailure | None,
    stored: str | StepFailure | None,
    storage_label: str = "storage",
) -> FileEntry:
    """The first failed step decides the Message; later steps never ran for this anchor."""
    if not isinstance(recorded, Recording):
        reason = recorded.reason if recorded else "not run"
        return FileEntry(UserId=anchor, RecordFile="", Status=0, Message=f"recording failed: {reason}")
    kept = f" (media kept in {recorded.folder})"
    if not isinstance(converted, TranscodeReport):
        reason = converted.reason if converted else "not run"
        return FileEntry(
            UserId=anchor, RecordFile="", Status=0, Message=f"transcoding failed: {reason}{kept}"
        )
    if not isinstance(stored, str):
        reason = stored.reason if stored else "not run"
        return FileEntry(
            UserId=anchor, RecordFile="", Status=0, Message=f"write to {storage_label} failed: {reason}{kept}"
        )
    message = f"ok: {converted.seconds:.1f} s, {', '.join(converted.streams)}; {recorded.ended_because}"
    if converted.note:
        message += f"; {converted.note}"
    return FileEntry(UserId=anchor, RecordFile=stored, Status=1, Message=message)


def file_entries(
    anchor: str,
    recorded: Recording | StepFailure | None,
    converted: list[TranscodeReport] | StepFailure | None,
    stored: list[str] | StepFailure | None,
    storage_label: str = "storage",
    stored_before: dict[str, str] | None = None,
) -> list[FileEntry]:
    """A take's entries: one per file it made (a take cut into pieces makes several), or one
    that says which step failed. When storing failed, the pieces stored before the failure
    (`stored_before`: by file name, from the take's journal) keep their entries."""
    if not isinstance(converted, list):
        return [file_entry(anchor, recorded, converted, None, storage_label)]
    if not converted:
        return [file_entry(anchor, recorded, StepFailure("no file was made"), None, storage_label)]
    if len(converted) > 1:
        converted = [
            replace(
                r,
                note="; ".join(
                    filter(None, [f"file {n} of {len(converted)} from {r.start_seconds:.1f} s", r.note])
                ),
            )
            for n, r in enumerate(converted, 1)
        ]
    if isinstance(stored, list):
        urls: list[str | StepFailure | None] = list(stored)
    else:
        before = stored_before or {}
        urls = [before.get(r.path.name) or stored for r in converted]
    return [
        file_entry(anchor, recorded, report, url, storage_label)
        for report, url in zip(converted, urls, strict=True)
    ]
