from __future__ import annotations

from prefect import get_run_logger, task

from recorder.media.transcode import TranscodeReport
from recorder.settings import RecorderSettings
from recorder.storage import open_storage
from recorder.storage.keys import recording_key
from recorder.workspace import Take
from tasks.session import RoomSession


@task(
    name="upload",
    task_run_name="upload-{take.anchor}",
    persist_result=True,
    retries=2,
    retry_delay_seconds=2,
)
def upload(session: RoomSession, take: Take, product: TranscodeReport) -> str:
    """Store the finished file; return its URL (the Files entry's RecordFile)."""
    extension = product.path.suffix.lstrip(".")
    key = recording_key(session.cos_path, session.room, take.anchor, take.started_at, extension)
    url = open_storage(RecorderSettings()).store(product.path, key)
    get_run_logger().info("%s: stored %s", take.anchor, url)
    return url
