from __future__ import annotations

import time

from prefect import get_run_logger, task

from recorder.media.capture import CaptureReport
from recorder.recording import Recording, record_take
from recorder.settings import RecorderSettings
from recorder.workspace import Take, Workspace
from tasks.session import RoomSession

PROGRESS_EVERY_SECONDS = 30.0


class _StopCheck:
    """Has the run been asked to stop? Asked for every packet, so it looks at the disk
    at most every half second."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        self._next_look = 0.0
        self._stopped = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._stopped and now >= self._next_look:
            self._next_look = now + 0.5
            self._stopped = self._workspace.stop_reason() is not None
        return self._stopped


@task(
    name="record",
    task_run_name="record-{take.anchor}",
    persist_result=True,
    retries=2,
    retry_delay_seconds=1,
)
def record(session: RoomSession, take: Take) -> Recording:
    """Pull one anchor's stream into crash-safe segments until it ends."""
    logger = get_run_logger()
    workspace = Workspace(session.run_dir)
    folder = workspace.folder(take)
    stop = _StopCheck(workspace)

    next_log = PROGRESS_EVERY_SECONDS

    def progress(report: CaptureReport) -> None:
        nonlocal next_log
        if report.seconds >= next_log:
            next_log += PROGRESS_EVERY_SECONDS
            logger.info("%s: %.0f s, %.1f MB recorded", take.anchor, report.seconds, report.bytes / 1e6)

    recording = record_take(take, folder, RecorderSettings(), should_stop=stop, on_progress=progress)
    if recording.ended_because.startswith("stopped"):
        # The stop cut the stream: say why it came. A stream that had ended on its own (and
        # whose wait for a return the stop cut short) keeps its own reason.
        why = workspace.stop_reason() or "stopped"
        recording = recording.model_copy(update={"ended_because": why + recording.ended_because[7:]})
    logger.info(
        "%s: recorded %.1f s (%s); %s",
        take.anchor,
        recording.seconds,
        ", ".join(recording.streams),
        recording.ended_because,
    )
    return recording
