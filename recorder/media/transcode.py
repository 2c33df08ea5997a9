"""Turn a recording's segments into the file the request's Mode asks for.

"00" MP3 audio, "01" MP4 video only, "02" MP4 audio+video. Streams are copied whenever
MP4 can carry their codec (H.264/AAC from TRTC always can); only MP3, and codecs MP4
cannot carry, are encoded. MP4 gets `faststart` so players start before the download ends.
The file is written under a temporary name and renamed when whole: a file with the final
name is always complete.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av

from recorder.media.segment_reader import SegmentReader

EXTENSIONS: dict[str, str] = {"00": "mp3", "01": "mp4", "02": "mp4"}
# What MP4 carries as-is; anything else is encoded to H.264 / AAC.
MP4_VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "alac", "flac", "ac3", "eac3"})


class TranscodeError(RuntimeError):
    """The recording cannot be turned into the requested file; the message says why."""


@dataclass
class TranscodeReport:
    path: Path
    streams: list[str]  # e.g. ["video:h264 (copied)", "audio:aac (copied)"]
    seconds: float
    note: str = ""  # what the user should know although it worked


def _wanted_types(mode: str) -> tuple[str, ...]:
    return {"00": ("audio",), "01": ("video",), "02": ("video", "audio")}[mode]


def transcode(segments: Sequence[Path], mode: str, destination: Path) -> TranscodeReport:
    """Write `destination` (.mp3 or .mp4 per `mode`) from the recording's segments."""
    if mode not in EXTENSIONS:
        raise TranscodeError(f'unknown Mode {mode!r}: expected "00", "01" or "02"')
    if not segments:
        raise TranscodeError("the recording has no media on disk")
    partial = destination.with_name(destination.name + ".part")
    try:
        report = _convert(segments, mode, destination, partial)
    except TranscodeError:
        partial.unlink(missing_ok=True)
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise TranscodeError(str(exc)) from exc
    os.replace(partial, destination)
    return report


def _convert(segments: Sequence[Path], mode: str, destination: Path, partial: Path) -> TranscodeReport:
    with SegmentReader(segments) as reader, av.open(reader, format="mpegts") as source:
        present = sorted({s.type for s in source.streams if s.type in ("audio", "video")})
        wanted = _wanted_types(mode)
        chosen = [next(s for s in source.streams if s.type == kind) for kind in wanted if kind in present]
        missing = [kind for kind in wanted if kind not in present]
        # Mode 02 keeps what there is (a student with the camera off still has a voice);
        # Modes 00 and 01 have nothing to give without their one kind of media.
        if not chosen:
            raise TranscodeError(
                f"Mode {mode} ({' and '.join(wanted)}) needs {' and '.join(missing)} "
                f"but the anchor published {' and '.join(present) or 'nothing'}"
            )
        if mode == "00":
            return _encode_mp3(source, chosen[0], destination, partial)
        report = _to_mp4(source, chosen, destination, partial)
        if missing:
            report.note = f"the anchor published no {' and no '.join(missing)}"
        return report


def _to_mp4(
    source: av.container.InputContainer,
    chosen: list[av.stream.Stream],
    destination: Path,
    partial: Path,
) -> TranscodeReport:
    described: list[str] = []
    with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as sink:
        copies: dict[int, av.stream.Stream] = {}
        encodes: dict[int, av.stream.Stream] = {}
        for stream in chosen:
            name = stream.codec_context.name
            carried = MP4_VIDEO_CODECS if stream.type == "video" else MP4_AUDIO_CODECS
            if name in carried:
                copies[stream.index] = sink.add_stream_from_template(stream)
                described.append(f"{stream.type}:{name} (copied)")
            elif stream.type == "video":
                enc = sink.add_stream("libx264", rate=stream.average_rate or 25)
                enc.width, enc.height = stream.codec_context.width, stream.codec_context.height
                enc.pix_fmt = "yuv420p"
                encodes[stream.index] = enc
                described.append(f"video:{name} (encoded to h264)")
            else:
                encodes[stream.index] = sink.add_stream("aac", rate=stream.codec_context.sample_rate)
                described.append(f"audio:{name} (encoded to aac)")
        # Start the file at zero on one shared offset, so audio and video stay in sync.
        offset = _first_timestamp(chosen)
        span = _Span()
        for packet in source.demux(*chosen):
            if packet.dts is None:
                continue
            if packet.stream.index in copies:
                shift = round(offset / packet.time_base)
                packet.dts -= shift
                if packet.pts is not None:
                    packet.pts -= shift
                span.add(packet)
                packet.stream = copies[packet.stream.index]
                sink.mux(packet)
            else:
                enc = encodes[packet.stream.index]
                for frame in packet.decode():
                    if frame.pts is not None:
                        frame.pts -= round(offset / frame.time_base)
                    sink.mux(enc.encode(frame))
        for enc in encodes.values():
            sink.mux(enc.encode(None))
    return TranscodeReport(destination, described, span.seconds)


def _encode_mp3(
    source: av.container.InputContainer,
    audio: av.stream.Stream,
    destination: Path,
    partial: Path,
) -> TranscodeReport:
    ctx = audio.codec_context
    with av.open(str(partial), "w", format="mp3") as sink:
        enc = sink.add_stream("libmp3lame", rate=ctx.sample_rate, layout=ctx.layout.name)
        enc.bit_rate = 64000 * ctx.channels
        samples = 0
        for frame in source.decode(audio):
            samples += frame.samples
            frame.pts = None  # the encoder counts samples; gaps are not ours to keep in MP3
            sink.mux(enc.encode(frame))
        sink.mux(enc.encode(None))
    if samples == 0:
        raise TranscodeError("the recording's audio could not be decoded")
    return TranscodeReport(destination, [f"audio:{ctx.name} (encoded to mp3)"], samples / ctx.sample_rate)


def _first_timestamp(streams: list[av.stream.Stream]) -> float:
    starts = [float(s.start_time * s.time_base) for s in streams if s.start_time is not None]
    return min(starts) if starts else 0.0


class _Span:
    """The media time covered by the packets written, for the report."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0

    def add(self, packet: av.Packet) -> None:
        t = (
            float(packet.pts * packet.time_base)
            if packet.pts is not None
            else float(packet.dts * packet.time_base)
        )
        dur = float(packet.duration * packet.time_base) if packet.duration else 0.0
        self.start = t if self.start is None else min(self.start, t)
        self.end = max(self.end, t + dur)

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else self.end - self.start
