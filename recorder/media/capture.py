"""Pull one live stream into crash-safe MPEG-TS segments, without re-encoding.

MPEG-TS is made of independent 188-byte packets, so every segment on disk, even the one
being written when the process dies, plays up to its last complete packet. FFmpeg's
segment muxer cuts on keyframes and lists each finished segment in `segments.csv`.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av

SEGMENT_PATTERN = "seg_%05d.ts"
SEGMENT_GLOB = "seg_*.ts"
SEGMENT_LIST = "segments.csv"


class CaptureError(RuntimeError):
    """The stream could not be recorded at all (nothing usable on disk)."""


@dataclass
class CaptureReport:
    streams: list[str] = field(default_factory=list)  # e.g. ["video:h264", "audio:aac"]
    packets: int = 0
    bytes: int = 0
    first_dts: float | None = None
    last_dts: float | None = None
    ended_because: str = ""

    @property
    def seconds(self) -> float:
        if self.first_dts is None or self.last_dts is None:
            return 0.0
        return self.last_dts - self.first_dts


def segment_files(folder: Path) -> list[Path]:
    """The segments of a recording in order (names sort as they were written)."""
    return sorted(folder.glob(SEGMENT_GLOB))


def capture(
    url: str,
    folder: Path,
    *,
    segment_seconds: float,
    read_timeout: float,
    first_segment: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    max_seconds: float | None = None,
    on_progress: Callable[[CaptureReport], None] | None = None,
) -> CaptureReport:
    """Record `url` into `folder` until the stream ends, goes silent or `should_stop()`.

    A read timeout is how a relay's end looks on RTMP (no EOF), so it ends the recording
    normally when something was recorded; it is an error only if nothing ever arrived.
    """
    folder.mkdir(parents=True, exist_ok=True)
    report = CaptureReport()
    try:
        source = av.open(
            url,
            timeout=(read_timeout, read_timeout),
            options={"analyzeduration": "1000000", "probesize": "500000"},
        )
    except (av.FFmpegError, OSError) as exc:
        raise CaptureError(f"cannot open the stream: {_reason(exc)}") from exc
    try:
        media = [s for s in source.streams if s.type in ("video", "audio")]
        if not media:
            raise CaptureError("the stream carries neither audio nor video")
        report.streams = [f"{s.type}:{s.codec_context.name}" for s in media]
        sink = av.open(
            str(folder / SEGMENT_PATTERN),
            "w",
            format="segment",
            options={
                "segment_time": f"{segment_seconds:g}",
                "segment_format": "mpegts",
                "segment_start_number": str(first_segment),
                "segment_list": str(folder / SEGMENT_LIST),
                "segment_list_type": "csv",
                "segment_list_flags": "live",
                # Every packet goes to disk at once: a crash loses no buffered media.
                "segment_format_options": "flush_packets=1",
            },
        )
        try:
            outputs = {s.index: sink.add_stream_from_template(s) for s in media}
            report.ended_because = _copy_packets(
                source, sink, outputs, report, should_stop, max_seconds, on_progress
            )
        finally:
            sink.close()
    finally:
        source.close()
    if report.packets == 0:
        raise CaptureError(f"no media arrived ({report.ended_because})")
    return report


def _copy_packets(
    source: av.container.InputContainer,
    sink: av.container.OutputContainer,
    outputs: dict[int, av.stream.Stream],
    report: CaptureReport,
    should_stop: Callable[[], bool],
    max_seconds: float | None,
    on_progress: Callable[[CaptureReport], None] | None,
) -> str:
    last_progress = time.monotonic()
    try:
        for packet in source.demux(*[source.streams[i] for i in outputs]):
            if packet.dts is None:
                continue  # the demuxer's flush packet at the end
            dts = float(packet.dts * packet.time_base)
            if report.first_dts is None:
                report.first_dts = dts
            report.last_dts = dts if report.last_dts is None else max(report.last_dts, dts)
            report.packets += 1
            report.bytes += packet.size
            packet.stream = outputs[packet.stream.index]
            sink.mux(packet)
            if on_progress is not None and time.monotonic() - last_progress >= 1.0:
                last_progress = time.monotonic()
                on_progress(report)
            if should_stop():
                return "stopped"
            if max_seconds is not None and report.seconds >= max_seconds:
                return "maximum duration reached"
    except av.error.ExitError:
        return "the stream went silent"  # timeout: PyAV's interrupt fired
    except (av.FFmpegError, OSError) as exc:
        if report.packets == 0:
            return f"read failed: {_reason(exc)}"
        if exc.errno == errno.EIO:
            # How FFmpeg's RTMP reader sees the server close the stream: nginx-rtmp does so
            # when the publisher (a TRTC relay) leaves. A failing network says ECONNRESET or
            # ETIMEDOUT instead, or goes silent.
            return "the stream ended (the server closed it)"
        return f"the stream broke off: {_reason(exc)}"
    return "the stream ended"


def _reason(exc: av.FFmpegError | OSError) -> str:
    """Why, without the URL that str(exc) ends with: a stream key may be in it."""
    return exc.strerror or type(exc).__name__
