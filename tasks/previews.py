from __future__ import annotations

from pathlib import Path

from prefect import task

from recorder.media.capture import segment_files
from recorder.media.pieces import TranscodeReport
from recorder.media.preview import PreviewError, poster_frame, waveform
from recorder.request import CosLocation
from recorder.run_summary import FilePreviews
from recorder.settings import RecorderSettings
from recorder.storage import StorageError, open_storage
from recorder.workspace import Take
from tasks.session import RoomSession, run_logger, take_folder

# What each Mode's file gets beside it: a picture of a video, the shape of a sound.
KINDS = {"00": ("waveform",), "01": ("poster",), "02": ("poster", "waveform")}
EXTENSION = {"poster": "jpg", "waveform": "png"}


@task(name="previews", task_run_name="previews-{take.anchor}", persist_result=True, retries=1)
def make_previews(
    session: RoomSession,
    take: Take,
    products: list[TranscodeReport],
    urls: list[str],
    location: CosLocation,
) -> list[FilePreviews]:
    """A poster frame (JPEG) for each video file, a waveform (PNG) for each audio file, made
    from the recording's segments over the file's stretch of it and stored beside the file
    under its key's stem. A preview that cannot be made is a line in the run's artifacts,
    never a failed file: the recording is what the user asked for."""
    logger = run_logger(session, take)
    folder = take_folder(session, take)
    segments = segment_files(folder)
    storage = open_storage(RecorderSettings(), location)
    made: list[FilePreviews] = []
    for product, url in zip(products, urls, strict=True):
        previews = FilePreviews()
        stem = storage.key_of(url).rpartition(".")[0]
        end = product.start_seconds + product.seconds
        for kind in KINDS[session.mode]:
            image = folder / f"{product.path.stem}.{EXTENSION[kind]}"
            draw = poster_frame if kind == "poster" else waveform
            try:
                draw(segments, image, start_seconds=product.start_seconds, end_seconds=end)
            except PreviewError as exc:
                previews.problems.append(f"no {kind}: {exc}")
                logger.warning("%s: no %s for %s: %s", take.anchor, kind, product.path.name, exc)
                continue
            try:
                previews.urls.append(storage.store(image, f"{stem}.{EXTENSION[kind]}"))
            except StorageError as exc:
                raise StorageError(f"{kind} of {product.path.name}: {exc}", permanent=exc.permanent) from exc
            finally:
                Path(image).unlink(missing_ok=True)
        logger.info(
            "%s: previews of %s: %s", take.anchor, product.path.name, ", ".join(previews.urls) or "none"
        )
        made.append(previews)
    return made
