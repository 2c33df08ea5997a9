"""Pull one live stream into crash-safe MPEG-TS segments, without re-encoding.

MPEG-TS is made of independent 188-byte packets, so every segment on disk, even the one
being written when the process dies, plays up to its last complete packet. FFmpeg's
segment muxer cuts on keyframes and lists each finished segment in `segments.csv`.

Two exceptions to "as it arrived": timestamps that jump backwards are moved on (see
`Timeline`), and the rare codec MPEG-TS cannot carry (PCM or Flash-era codecs over FLV,
VP9) is encoded to H.264 or AAC as it arrives. TRTC's H.264/AAC is always copied.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from recorder.media.timeline import Timeline

SEGMENT_PATTERN = "seg_%05d.ts"
SEGMENT_GLOB = "seg_*.ts"
SEGMENT_LIST = "segments.csv"
# What a full work folder looks like to a writer: no space left, a quota reached, or a file
# size limit (a file system's maximum, RLIMIT_FSIZE).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
WORK_FOLDER_FULL = "the work folder is full"
# What FFmpeg's MPEG-TS muxer carries. It writes any other codec as private data that no
# demuxer recognises: the transcoder would find that audio or video missing.
TS_CODECS = frozenset(
    {"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "aac", "mp2", "mp3", "ac3", "eac3", "opus"}
)


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
    # Writing to the work folder failed (a full disk): the end is ours, not the stream's.
    write_failed: bool = False

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
    normally when something was recorded; it is an error only if nothing ever arrived. So
    does a full work folder: the segments written so far are the recording, and
    `ended_because` says the folder is full.
    """
    folder.mkdir(parents=True, exist_ok=True)
    report = CaptureReport()
    try:
        source = av.open(
            url,
            timeout=(read_timeout, read_timeout),
            options={"analyzeduration": "1000000", "probesize": "500000"},
        )
    except av.error.ExitError as exc:
        # PyAV's interrupt: the read timeout passed before anything recognisable arrived.
        raise CaptureError(f"cannot open the stream: no audio or video within {read_timeout:g} s") from exc
    except (av.FFmpegError, OSError) as exc:
        raise CaptureError(f"cannot open the stream: {_reason(exc)}") from exc
    closing_failed: str | None = None
    try:
        media = [s for s in source.streams if isinstance(s, (AudioStream, VideoStream))]
        if not media:
            raise CaptureError("the stream carries neither audio nor video")
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
            outputs: dict[int, av.stream.Stream] = {}
            encoders: dict[int, _Encoder] = {}
            for stream in media:
                if stream.codec_context.codec.canonical_name in TS_CODECS:
                    outputs[stream.index] = sink.add_stream_from_template(stream)
                else:
                    encoders[stream.index] = _Encoder(sink, stream)
                    outputs[stream.index] = encoders[stream.index].output
            report.streams = [_described(s, encoders.get(s.index)) for s in media]
            report.ended_because = _copy_packets(
                source, sink, outputs, encoders, report, should_stop, max_seconds, on_progress
            )
            if not report.write_failed:
                for encoder in encoders.values():
                    encoder.flush(sink)
        finally:
            try:
                sink.close()
            except (av.FFmpegError, OSError) as exc:
                # The trailer is one more write: on a full disk it fails as the packets did.
                # PyAV has closed the files all the same, and every segment plays up to its
                # last complete packet, so what is on disk stands as the recording.
                closing_failed = _write_failure(exc)
    finally:
        source.close()
    if closing_failed is not None and not report.write_failed:
        report.write_failed = True
        report.ended_because += f", but the end of the last segment was not written: {closing_failed}"
    if report.packets == 0:
        if report.write_failed:
            raise CaptureError(f"nothing could be written: {report.ended_because}")
        raise CaptureError(f"no media arrived ({report.ended_because})")
    return report


def _copy_packets(
    source: av.container.InputContainer,
    sink: av.container.OutputContainer,
    outputs: dict[int, av.stream.Stream],
    encoders: dict[int, _Encoder],
    report: CaptureReport,
    should_stop: Callable[[], bool],
    max_seconds: float | None,
    on_progress: Callable[[CaptureReport], None] | None,
) -> str:
    last_progress = time.monotonic()
    timeline = Timeline()
    # Per packet, in seconds: a float per stream, not a Fraction per packet (this loop runs
    # some 70 times a second for every stream a process records).
    seconds_per_tick = {i: float(source.streams[i].time_base or 0) for i in outputs}
    try:
        for packet in source.demux(*[source.streams[i] for i in outputs]):
            if packet.dts is None:
                continue  # the demuxer's flush packet at the end
            timeline.place(packet)
            index = packet.stream.index
            dts = packet.dts * seconds_per_tick[index]
            size = packet.size
            encoder = encoders.get(index)
            encoded = None if encoder is None else encoder.encode(packet)
            try:
                if encoded is None:
                    packet.stream = outputs[index]
                    sink.mux_one(packet)
                else:
                    sink.mux(encoded)
            except (av.FFmpegError, OSError) as exc:
                # Apart from the read errors below: the source is fine, the disk is not.
                # Reading on would only drop what cannot be written; stop, keep what is there.
                report.write_failed = True
                return _write_failure(exc)
            # Counted once on disk, so `packets` and `seconds` say what the recording holds.
            if report.first_dts is None:
                report.first_dts = dts
            report.last_dts = dts if report.last_dts is None else max(report.last_dts, dts)
            report.packets += 1
            report.bytes += size
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


class _Encoder:
    """Decodes a stream MPEG-TS cannot carry and encodes it to H.264 or AAC as it arrives."""

    def __init__(self, sink: av.container.OutputContainer, source: AudioStream | VideoStream) -> None:
        self.output: AudioStream | VideoStream
        if isinstance(source, VideoStream):
            video = sink.add_stream(
                "libx264",
                rate=source.average_rate or 25,
                # Live: the fastest preset, and no frames held back for B-frame decisions.
                options={"preset": "ultrafast", "tune": "zerolatency"},
            )
            video.width, video.height, video.pix_fmt = source.width, source.height, "yuv420p"
            if source.time_base:
                # The source's clock, not 1/fps: frames of a variable rate keep their times.
                video.codec_context.time_base = source.time_base
            self.output = video
        else:
            self.output = sink.add_stream("aac", rate=source.sample_rate, layout=source.layout.name)

    def encode(self, packet: av.Packet) -> list[av.Packet]:
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return []  # a damaged packet costs its own moment, not the recording
        return [p for frame in frames for p in self.output.encode(frame)]  # type: ignore[arg-type]

    def flush(self, sink: av.container.OutputContainer) -> None:
        """Write the frames the encoder still holds (a full disk shows again in sink.close())."""
        with contextlib.suppress(av.FFmpegError, OSError):
            sink.mux(self.output.encode(None))


def _described(stream: AudioStream | VideoStream, encoder: _Encoder | None) -> str:
    described = f"{stream.type}:{stream.codec_context.name}"
    if encoder is not None:
        described += f" (encoded to {encoder.output.codec_context.codec.canonical_name})"
    return described


def _write_failure(exc: av.FFmpegError | OSError) -> str:
    """Why the recording could not be written on; the path is left out (it says nothing new)."""
    if exc.errno in DISK_FULL_ERRNOS:
        return f"{WORK_FOLDER_FULL}: {_reason(exc)}"
    return f"writing to the work folder failed: {_reason(exc)}"


def _reason(exc: av.FFmpegError | OSError) -> str:
    """Why, without the URL that str(exc) ends with: a stream key may be in it."""
    return exc.strerror or type(exc).__name__
