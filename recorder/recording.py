"""Record one take of one anchor, keeping whatever earlier attempts already wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from recorder.media.capture import CaptureError, CaptureReport, capture, segment_files
from recorder.settings import RecorderSettings
from recorder.workspace import Take


class Recording(BaseModel):
    """What the record step hands on: where the media is and what it holds."""

    model_config = ConfigDict(frozen=True)

    take: Take
    folder: Path
    streams: list[str]
    seconds: float
    ended_because: str


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
        report = capture(
            take.stream_url,
            folder,
            segment_seconds=settings.segment_seconds,
            read_timeout=settings.read_timeout_seconds,
            first_segment=earlier,
            should_stop=should_stop,
            on_progress=on_progress,
        )
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
    return Recording(
        take=take,
        folder=folder,
        streams=report.streams,
        seconds=report.seconds,
        ended_because=report.ended_because,
    )
