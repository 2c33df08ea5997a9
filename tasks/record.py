from __future__ import annotations

import time
from pathlib import Path

from prefect import task

from recorder.live_finish import LiveFinisher
from recorder.media.capture import CaptureReport
from recorder.media.transcode import EXTENSIONS
from recorder.recording import Recording, record_take
from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage import StorageError, open_storage
from recorder.storage.base import LiveObject
from recorder.workspace import Take, Workspace
from tasks.session import RoomSession, converted_file, run_logger, stored_key

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


def _start_live_finish(
    session: RoomSession, take: Take, folder: Path, location: CosLocation, settings: RecorderSettings
) -> LiveFinisher | None:
    """Convert (and store to COS) while recording, unless turned off or COS cannot start it;
    either way the ordinary steps do the work later."""
    if not settings.live_finish:
        return None

    def destination_of(index: int) -> Path:
        return converted_file(folder, take, session.mode, index)

    # A local copy to keep (keep_local_copy) is written here and stored afterwards.
    if settings.keep_local_copy:
        return LiveFinisher.to_folder(folder, session.mode, destination_of, session.max_file_seconds)
    try:
        storage = open_storage(settings, location)
    except StorageError as exc:
        run_logger(session, take).warning("%s: not storing while recording: %s", take.anchor, exc)
        return None

    def open_object(start_seconds: float) -> LiveObject:
        return storage.open_live(stored_key(session, take, EXTENSIONS[session.mode], start_seconds), folder)

    return LiveFinisher.to_storage(
        folder, session.mode, destination_of, open_object, session.max_file_seconds
    )


@task(
    name="record",
    task_run_name="record-{take.anchor}",
    persist_result=True,
    retries=2,
    retry_delay_seconds=1,
)
def record(session: RoomSession, take: Take, location: CosLocation) -> Recording:
    """Pull one anchor's stream into crash-safe segments until it ends, converting it (and
    storing it to COS) on the way.

    `location` is the request's CosConfig, keys included: task inputs are not persisted."""
    logger = run_logger(session, take)
    settings = RecorderSettings()
    workspace = Workspace(session.run_dir)
    folder = workspace.folder(take)
    stop = _StopCheck(workspace)

    next_log = PROGRESS_EVERY_SECONDS

    def progress(report: CaptureReport) -> None:
        nonlocal next_log
        if report.seconds >= next_log:
            next_log += PROGRESS_EVERY_SECONDS
            logger.info("%s: %.0f s, %.1f MB recorded", take.anchor, report.seconds, report.bytes / 1e6)

    live = _start_live_finish(session, take, folder, location, settings)
    try:
        recording = record_take(take, folder, settings, should_stop=stop, on_progress=progress)
    except BaseException:
        if live is not None:
            live.abort()
        raise
    if live is not None:
        finished = time.monotonic()
        reports = live.finish()
        if reports is None:
            logger.warning(
                "%s: converting while recording failed (%s); converting now", take.anchor, live.failure
            )
        else:
            logger.info(
                "%s: %s finished %.1f s after the recording",
                take.anchor,
                "stored" if reports[-1].stored_url else "converted",
                time.monotonic() - finished,
            )
            recording = recording.model_copy(update={"live": reports})
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
