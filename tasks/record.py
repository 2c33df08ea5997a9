from __future__ import annotations

from prefect import get_run_logger, task

from recorder.media.capture import CaptureReport
from recorder.recording import Recording, record_take
from recorder.settings import RecorderSettings
from recorder.workspace import Take, Workspace
from tasks.session import RoomSession

PROGRESS_EVERY_SECONDS = 30.0


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
    folder = Workspace(session.run_dir).folder(take)

    next_log = PROGRESS_EVERY_SECONDS

    def progress(report: CaptureReport) -> None:
        nonlocal next_log
        if report.seconds >= next_log:
            next_log += PROGRESS_EVERY_SECONDS
            logger.info("%s: %.0f s, %.1f MB recorded", take.anchor, report.seconds, report.bytes / 1e6)

    recording = record_take(take, folder, RecorderSettings(), on_progress=progress)
    logger.info(
        "%s: recorded %.1f s (%s); %s",
        take.anchor,
        recording.seconds,
        ", ".join(recording.streams),
        recording.ended_because,
    )
    return recording
