"""Record one take of one anchor, keeping whatever earlier attempts already wrote."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from recorder.media.capture import CaptureError, CaptureReport, capture, segment_files
from recorder.media.transcode import TranscodeReport
from recorder.settings import RecorderSettings
from recorder.workspace import Take

RECONNECT_POLL_SECONDS = 1.0
MIN_GAP_SECONDS = 0.5
# In a take's folder while its recording waits for the stream to come back.
RECONNECTING_FILE = "reconnecting"


class Recording(BaseModel):
    """What the record step hands on: where the media is and what it holds."""

    model_config = ConfigDict(frozen=True)

    take: Take
    folder: Path
    streams: list[str]
    seconds: float
    ended_because: str
    # The final file(s), made while recording (see recorder.live_finish); None: not made live.
    live: list[TranscodeReport] | None = None


def record_take(
    take: Take,
    folder: Path,
    settings: RecorderSettings,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[CaptureReport], None] | None = None,
) -> Recording:
    """Pull the take's stream into `folder`. A retry appends segments after the earlier
    ones (never overwriting them); if the stream is gone by then, what is on disk is the
    recording."""
    earlier = len(segment_files(folder))
    try:
        report = _pull(take, folder, settings, should_stop, on_progress)
    except CaptureError as exc:
        if earlier == 0:
            raise
        return Recording(
            take=take,
            folder=folder,
            streams=[],
            seconds=0.0,
            ended_because=f"kept the {earlier} segments recorded before: {exc}",
        )
    streams, seconds, ended = list(report.streams), report.seconds, report.ended_because
    returns: list[float] = []
    while _stream_lost(ended) and not should_stop():
        lost_at = time.monotonic()
        resumed = _reconnect(take, folder, settings, should_stop, on_progress)
        if resumed is None:
            break
        report, back_at = resumed
        # A server may still hand out the last moments of the stream that just ended: that
        # is the same stream, not its return.
        if back_at - lost_at >= MIN_GAP_SECONDS:
            returns.append(back_at - lost_at)
        streams += [s for s in report.streams if s not in streams]
        seconds += report.seconds
        ended = report.ended_because
    if returns:
        gaps = ", ".join(f"{gap:.1f} s" for gap in returns)
        ended += f"; the stream came back {len(returns)} time(s) into the same file (after {gaps})"
    return Recording(take=take, folder=folder, streams=streams, seconds=seconds, ended_because=ended)


def _stream_lost(ended_because: str) -> bool:
    """The stream went away by itself (not a stop, not the maximum length)."""
    return ended_because.startswith(("the stream ended", "the stream broke off", "the stream went silent"))


def _pull(
    take: Take,
    folder: Path,
    settings: RecorderSettings,
    should_stop: Callable[[], bool],
    on_progress: Callable[[CaptureReport], None] | None,
) -> CaptureReport:
    """One capture of the take's stream, its segments after those already in `folder`."""
    return capture(
        take.stream_url,
        folder,
        segment_seconds=settings.segment_seconds,
        read_timeout=settings.read_timeout_seconds,
        first_segment=len(segment_files(folder)),
        should_stop=should_stop,
        on_progress=on_progress,
    )


def _reconnect(
    take: Take,
    folder: Path,
    settings: RecorderSettings,
    should_stop: Callable[[], bool],
    on_progress: Callable[[CaptureReport], None] | None,
) -> tuple[CaptureReport, float] | None:
    """Pull the take's stream again if it comes back within `settings.reconnect_seconds`;
    its segments follow the ones before. The capture and when it began (monotonic), or None
    if the stream does not come back (or a stop comes)."""
    deadline = time.monotonic() + settings.reconnect_seconds
    # While it waits, this recording is not what keeps the room going (see RoomWatcher).
    marker = folder / RECONNECTING_FILE
    marker.touch()
    back = _first_then(lambda: marker.unlink(missing_ok=True), on_progress)
    try:
        while time.monotonic() < deadline and not should_stop():
            began = time.monotonic()
            try:
                return _pull(take, folder, settings, should_stop, back), began
            except CaptureError:
                # Not back yet (the server has no such stream): look again in a moment.
                time.sleep(min(RECONNECT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        return None
    finally:
        marker.unlink(missing_ok=True)


def _first_then(
    first: Callable[[], None], then: Callable[[CaptureReport], None] | None
) -> Callable[[CaptureReport], None]:
    """A progress callback that runs `first` once (the stream is back), then `then`."""
    done = False

    def progress(report: CaptureReport) -> None:
        nonlocal done
        if not done:
            done = True
            first()
        if then is not None:
            then(report)

    return progress
