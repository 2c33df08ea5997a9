"""Turn a recording's segments into the file the request's Mode asks for.

"00" MP3 audio, "01" MP4 video only, "02" MP4 audio+video. Streams are copied whenever
MP4 can carry their codec (H.264/AAC from TRTC always can); only MP3, and codecs MP4
cannot carry, are encoded. MP4 gets `faststart` so players start before the download ends.
The file is written under a temporary name and renamed when whole: a file with the final
name is always complete.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from recorder.media.segment_reader import SegmentReader
from recorder.media.timeline import Timeline

EXTENSIONS: dict[str, str] = {"00": "mp3", "01": "mp4", "02": "mp4"}
# Where a converted file is written: a path, or a file object PyAV writes and seeks in.
Output = str | BinaryIO | io.RawIOBase
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
    # Where the file is stored already, when it was stored while being written (live).
    stored_url: str = ""


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
        with SegmentReader(segments) as reader:
            report = convert(reader, mode, destination, str(partial))
    except TranscodeError:
        partial.unlink(missing_ok=True)
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise TranscodeError(str(exc)) from exc
    os.replace(partial, destination)
    return report


def convert(
    reader: io.RawIOBase, mode: str, destination: Path, output: Output, *, faststart: bool = True
) -> TranscodeReport:
    """Read a recording's MPEG-TS from `reader`, write the Mode's file to `output` (a path
    or a writable, seekable file object); the report names `destination`.

    `faststart` moves the MP4 index to the front, so a player starts before the download
    ends; it rewrites the whole file at the end, so a file stored while it is written has
    its index at the end instead (where FFmpeg puts it by default: every player reads it)."""
    if mode not in EXTENSIONS:
        raise TranscodeError(f'unknown Mode {mode!r}: expected "00", "01" or "02"')
    with av.open(reader, "r", format="mpegts") as source:
        media: list[AudioStream | VideoStream] = [
            s for s in source.streams if isinstance(s, (AudioStream, VideoStream))
        ]
        present = sorted({s.type for s in media})
        wanted = _wanted_types(mode)
        chosen = [next(s for s in media if s.type == kind) for kind in wanted if kind in present]
        missing = [kind for kind in wanted if kind not in present]
        # Mode 02 keeps what there is (a student with the camera off still has a voice);
        # Modes 00 and 01 have nothing to give without their one kind of media.
        if not chosen:
            raise TranscodeError(
                f"Mode {mode} ({' and '.join(wanted)}) needs {' and '.join(missing)} "
                f"but the anchor published {' and '.join(present) or 'nothing'}"
            )
        if mode == "00":
            audio = chosen[0]
            assert isinstance(audio, AudioStream)
            return _encode_mp3(source, audio, destination, output)
        report = _to_mp4(source, chosen, destination, output, faststart)
        if missing:
            report.note = f"the anchor published no {' and no '.join(missing)}"
        return report


def _encoder_for(sink: OutputContainer, stream: AudioStream | VideoStream) -> AudioStream | VideoStream:
    """H.264 or AAC in place of a codec MP4 cannot carry, with the source's picture or sound."""
    if isinstance(stream, VideoStream):
        video = sink.add_stream("libx264", rate=stream.average_rate or 25)
        video.width, video.height, video.pix_fmt = stream.width, stream.height, "yuv420p"
        return video
    return sink.add_stream("aac", rate=stream.sample_rate, layout=stream.layout.name)


def _to_mp4(
    source: InputContainer,
    chosen: list[AudioStream | VideoStream],
    destination: Path,
    output: Output,
    faststart: bool,
) -> TranscodeReport:
    described: list[str] = []
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(output, "w", format="mp4", options=options) as sink:
        copies: dict[int, Stream] = {}
        encodes: dict[int, AudioStream | VideoStream] = {}
        for stream in chosen:
            name = stream.codec_context.name
            carried = MP4_VIDEO_CODECS if stream.type == "video" else MP4_AUDIO_CODECS
            if name in carried:
                copies[stream.index] = sink.add_stream_from_template(stream)
                described.append(f"{stream.type}:{name} (copied)")
            else:
                encodes[stream.index] = _encoder_for(sink, stream)
                target = "h264" if stream.type == "video" else "aac"
                described.append(f"{stream.type}:{name} (encoded to {target})")
        # Start the file at zero on one shared offset, so audio and video stay in sync; the
        # segments of a recording retried after a reconnect may restart their clock, which
        # the timeline moves on so that the MP4's timestamps only increase.
        timeline = Timeline(start=_first_timestamp(chosen))
        span = _Span()
        for packet in source.demux(*chosen):
            if packet.dts is None:
                continue
            timeline.place(packet)
            if packet.stream.index in copies:
                span.add(packet)
                packet.stream = copies[packet.stream.index]
                sink.mux(packet)
                continue
            encoder = encodes[packet.stream.index]
            for frame in packet.decode():
                if isinstance(frame, (AudioFrame, VideoFrame)):
                    span.add_frame(frame)  # on the timeline: decoded from placed packets
                    sink.mux(encoder.encode(frame))  # type: ignore[arg-type]  # kinds match
        for encoder in encodes.values():
            sink.mux(encoder.encode(None))
    return TranscodeReport(destination, described, span.seconds)


def _encode_mp3(
    source: InputContainer,
    audio: AudioStream,
    destination: Path,
    output: Output,
) -> TranscodeReport:
    with av.open(output, "w", format="mp3") as sink:
        # Mono at 32 kHz, 96 kb/s CBR, LAME -q 7: for listening and for speech recognition, at
        # a fifth of the CPU of 48 kHz stereo at LAME's default -q 3. TRTC's AAC (64 kb/s
        # stereo) keeps nothing above about 15 kHz, which 32 kHz still carries; its voices
        # come from mono microphones, and ASR takes mono. LAME's time grows with samples and
        # channels, hardly with bit rate, so bits make up for -q 7 leaving out noise shaping
        # (-q 3 takes 1.5 to 1.8 times as long). bench/transcode_vs_ffmpeg.py measures it.
        encoder = sink.add_stream("libmp3lame", rate=32000, layout="mono", options={"compression_level": "7"})
        encoder.format = "fltp"  # as AAC decodes; libmp3lame's default s32p is a round trip
        encoder.bit_rate = 96000
        samples = 0
        for frame in source.decode(audio):
            samples += frame.samples
            frame.pts = None  # the encoder counts samples; gaps are not ours to keep in MP3
            sink.mux(encoder.encode(frame))
        sink.mux(encoder.encode(None))
    if samples == 0:
        raise TranscodeError("the recording's audio could not be decoded")
    name = audio.codec_context.name
    return TranscodeReport(destination, [f"audio:{name} (encoded to mp3)"], samples / audio.sample_rate)


def _first_timestamp(streams: Sequence[Stream]) -> float:
    starts = [float(s.start_time * s.time_base) for s in streams if s.start_time is not None and s.time_base]
    return min(starts) if starts else 0.0


class _Span:
    """The media time covered by what was written, for the report."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0

    def _cover(self, start: float, duration: float) -> None:
        self.start = start if self.start is None else min(self.start, start)
        self.end = max(self.end, start + duration)

    def add(self, packet: av.Packet) -> None:
        at = packet.pts if packet.pts is not None else packet.dts
        if at is not None and packet.time_base:
            self._cover(float(at * packet.time_base), float((packet.duration or 0) * packet.time_base))

    def add_frame(self, frame: AudioFrame | VideoFrame) -> None:
        if frame.pts is None or not frame.time_base:
            return
        duration = frame.samples / frame.sample_rate if isinstance(frame, AudioFrame) else 0.0
        self._cover(float(frame.pts * frame.time_base), duration)

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None else self.end - self.start
