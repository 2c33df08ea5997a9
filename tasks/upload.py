from __future__ import annotations

import time

from prefect import task

from recorder.media.transcode import TranscodeReport
from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage import open_storage
from recorder.stored_journal import StoredJournal
from recorder.workspace import Take
from tasks.session import RoomSession, run_logger, stored_key, take_folder, worth_retrying


# Retries and their backoff come from the settings (see record_room's `_start`).
@task(
    name="upload",
    task_run_name="upload-{take.anchor}",
    persist_result=True,
    retry_condition_fn=worth_retrying,
)
def upload(
    session: RoomSession, take: Take, products: list[TranscodeReport], location: CosLocation
) -> list[str]:
    """Store the finished file(s); return their URLs (each a Files entry's RecordFile).

    `location` is the request's CosConfig, keys included: task inputs are not persisted,
    and the result (URLs) holds no secret. A retry stores only what is not stored yet."""
    logger = run_logger(session, take)
    journal = StoredJournal(take_folder(session, take))
    storage = None
    urls: list[str] = []
    for product in products:
        url = product.stored_url or journal.urls().get(product.path.name)
        if url:
            when = "while recording" if product.stored_url else "by an earlier attempt"
            logger.info("%s: %s was stored %s: %s", take.anchor, product.path.name, when, url)
            urls.append(url)
            continue
        storage = storage or open_storage(RecorderSettings(), location)
        key = stored_key(session, take, product.path.suffix.lstrip("."), product.start_seconds)
        size = product.path.stat().st_size
        started = time.monotonic()
        url = storage.store(product.path, key)
        journal.add(product.path.name, url)
        seconds = time.monotonic() - started
        logger.info(
            "%s: stored %s (%.1f MB in %.1f s, %.1f MB/s)",
            take.anchor,
            url,
            size / 1e6,
            seconds,
            size / 1e6 / max(seconds, 1e-3),
        )
        urls.append(url)
    return urls
