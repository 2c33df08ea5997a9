from __future__ import annotations

import time

from prefect import get_run_logger, task

from recorder.media.transcode import TranscodeReport
from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage import open_storage
from recorder.workspace import Take
from tasks.session import RoomSession, stored_key, worth_retrying


# Retries and their backoff come from the settings (see record_room's `_start`).
@task(
    name="upload",
    task_run_name="upload-{take.anchor}",
    persist_result=True,
    retry_condition_fn=worth_retrying,
)
def upload(session: RoomSession, take: Take, product: TranscodeReport, location: CosLocation) -> str:
    """Store the finished file; return its URL (the Files entry's RecordFile).

    `location` is the request's CosConfig, keys included: task inputs are not persisted,
    and the result (a URL) holds no secret."""
    if product.stored_url:
        get_run_logger().info("%s: stored %s while recording", take.anchor, product.stored_url)
        return product.stored_url
    extension = product.path.suffix.lstrip(".")
    key = stored_key(session, take, extension)
    storage = open_storage(RecorderSettings(), location)
    size = product.path.stat().st_size
    started = time.monotonic()
    url = storage.store(product.path, key)
    seconds = time.monotonic() - started
    get_run_logger().info(
        "%s: stored %s (%.1f MB in %.1f s, %.1f MB/s)",
        take.anchor,
        url,
        size / 1e6,
        seconds,
        size / 1e6 / max(seconds, 1e-3),
    )
    return url
