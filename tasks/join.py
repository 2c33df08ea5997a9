from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task

from recorder.request import RecordingRequest
from recorder.rooms import open_room
from recorder.settings import RecorderSettings
from recorder.storage import STORAGE_LABELS, open_storage
from tasks.session import RoomSession, worth_retrying


@task(name="join", persist_result=True, retries=2, retry_delay_seconds=2, retry_condition_fn=worth_retrying)
def join(request: RecordingRequest, run_dir: Path) -> RoomSession:
    """Reach the room, prove the storage takes files, and lay out the run's folder.

    Both checks fail in seconds: a bad bucket or key must not surface after an hour of
    recording. A StorageError here means nothing was recorded."""
    settings = RecorderSettings()
    open_room(settings, request.SdkAppId, request.room, request=request)
    open_storage(settings, request.CosConfig).check_writable()
    run_dir.mkdir(parents=True, exist_ok=True)
    get_run_logger(room=request.room, sdk_app_id=str(request.SdkAppId)).info(
        "joined room %s of SdkAppId %s as %s (Mode %s); files go to %s; work folder %s",
        request.room,
        request.SdkAppId,
        request.UserId,
        request.Mode,
        STORAGE_LABELS[settings.storage],
        run_dir,
    )
    return RoomSession(
        backend=settings.room_backend,
        sdk_app_id=request.SdkAppId,
        room=request.room,
        run_dir=run_dir,
        mode=request.Mode,
        cos_path=request.CosConfig.Path,
        storage_label=STORAGE_LABELS[settings.storage],
        joined_at=datetime.now(UTC),
        max_file_seconds=(
            request.MaxMediaFileDuration * 60 if request.MaxMediaFileDuration else settings.max_file_seconds
        ),
    )
