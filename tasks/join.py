from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task

from recorder.request import RecordingRequest
from recorder.rooms import open_room
from recorder.settings import RecorderSettings
from tasks.session import RoomSession


@task(name="join", persist_result=True, retries=2, retry_delay_seconds=2)
def join(request: RecordingRequest, run_dir: Path) -> RoomSession:
    """Reach the room (fails fast if it cannot be reached) and lay out the run's folder."""
    settings = RecorderSettings()
    open_room(settings.room_backend, request.SdkAppId, request.room)
    run_dir.mkdir(parents=True, exist_ok=True)
    get_run_logger().info(
        "joined room %s of SdkAppId %s as %s (Mode %s); work folder %s",
        request.room,
        request.SdkAppId,
        request.UserId,
        request.Mode,
        run_dir,
    )
    return RoomSession(
        backend=settings.room_backend,
        sdk_app_id=request.SdkAppId,
        room=request.room,
        run_dir=run_dir,
        mode=request.Mode,
        cos_path=request.CosConfig.Path,
        joined_at=datetime.now(UTC),
    )
