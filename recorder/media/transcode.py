"""Turn a recording's segments into the file the request's Mode asks for.

"00" MP3 audio, "01" MP4 video only, "02" MP4 audio+video. Streams are copied whenever
MP4 can carry their codec (H.264/AAC from TRTC always can); only MP3, and codecs MP4
cannot carry, are encoded. MP4 gets `faststart` so players start before the download ends.
The file is written under a temporary name and renamed when whole: a file with the final
name is always complete.

With a maximum file duration, the recording becomes consecutive files instead, cut on a
video keyframe (MP4; audio packets go to the file their time falls in) or after so many
samples (MP3): every frame is in exactly one file, none is lost or doubled at a cut.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import av
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from recorder.media.pieces import LocalPieces, Output, PieceOutputs, TranscodeReport, output_size, piece_name
from recorder.media.segment_reader import SegmentReader
from recorder.media.timeline import Timeline

EXTENSIONS: dict[str, str] = {"00": "mp3", "01": "mp4", "02": "mp4"}
# What MP4 carries as-is; anything else is encoded to H.264 / AAC.
MP4_VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "alac", "flac", "ac3", "eac3"})
# The shortest piece a maximum file duration may ask for: shorter than a GOP or two makes
# pieces that are mostly cut overhead.
MIN_PIECE_SECONDS = 10.0

__all__ = [
    "EXTENSIONS",
    "Output",
    "TranscodeError",
    "TranscodeReport",
    "convert",
    "convert_pieces",
    "transcode",
    "transcode_pieces",
]


class TranscodeError(RuntimeError):
    """The recording cannot be turned into the requested file; the message says why."""


def _wanted_types(mode: str) -> tuple[str, ...]:
    return {"00": ("audio",), "01": ("video",), "02": ("video", "audio")}[mode]


def transcode(segments: Sequence[Path], mode: str, destination: Path) -> TranscodeReport:
    """Write `destination` (.mp3 or .mp4 per `mode`) from the recording's segments."""
    return transcode_pieces(segments, mode, destination)[0]


def transcode_pieces(
    segments: Sequence[Path], mode: str, destination: Path, max_seconds: float | None = None
) -> list[TranscodeReport]:
    """Write the recording as `destination`, or, with `max_seconds`, as consecutive files of
    at most about that length: `destination`, then `{stem}_2`, `{stem}_3`… beside it."""
    if not segments:
        raise TranscodeError("the recording has no media on disk")
    outputs = LocalPieces(lambda index: destination.with_name(piece_name(destination.name, index)))
    with SegmentReader(segments) as reader:
        return convert_pieces(reader, mode, outputs, max_seconds=max_seconds)


def convert(
    reader: io.RawIOBase, mode: str, destination: Path, output: Output, *, faststart: bool = True
) -> TranscodeReport:
    """Read a recording's MPEG-TS from `reader`, write the Mode's file to `output` (a path
    or a writable, seekable file object); the report names `destination`.

    `faststart` moves the MP4 index to the front, so a player starts before the download
    ends; it rewrites the whole file at the end, so a file stored while it is written has
    its index at the end instead (where FFmpeg puts it by default: every player reads it)."""
    return convert_pieces(reader, mode, _OneOutput(destination, output), faststart=faststart)[0]


def convert_pieces(
    reader: io.RawIOBase,
    mode: str,
    outputs: PieceOutputs,
    *,
    max_seconds: float | None = None,
    faststart: bool = True,
) -> list[TranscodeReport]:
    """Read a recording's MPEG-TS from `reader` and write the Mode's file, or consecutive
    files of at most about `max_seconds` each, where `outputs` says; each piece is closed
    (handed to `outputs.close`) as soon as it is whole. On failure nothing is left open."""
    if mode not in EXTENSIONS:
        raise TranscodeError(f'unknown Mode {mode!r}: expected "00", "01" or "02"')
    if max_seconds is not None and max_seconds < MIN_PIECE_SECONDS:
        raise TranscodeError(f"a maximum file duration of {max_seconds:g} s is below {MIN_PIECE_SECONDS:g} s")
    try:
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
                return _encode_mp3(source, audio, outputs, max_seconds)
            reports = _to_mp4(source, chosen, outputs, faststart, max_seconds)
            if missing:
                for report in reports:
                    report.note = f"the anchor published no {' and no '.join(missing)}"
            return reports
    except TranscodeError:
        outputs.abort()
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        outputs.abort()
        raise TranscodeError(str(exc)) from exc
    except BaseException:
        outputs.abort()
        raise


class _OneOutput:
    """The one output of an uncut conversion, as `PieceOutputs`; what it is finished into is
    the caller's business."""

    def __init__(self, destination: Path, output: Output) -> None:
        self._destination = destination
        self._output = output

    def open(self, index: int, start_seconds: float) -> tuple[Path, Output]:
        return self._destination, self._output

    def close(self, report: TranscodeReport) -> None:
        pass

    def abort(self) -> None:
        pass


def _encoder_for(sink: OutputContainer, stream: AudioStream | VideoStream) -> AudioStream | VideoStream:
    """H.264 or AAC in place of a codec MP4 cannot carry, with the source's picture or sound."""
    if isinstance(stream, VideoStream):
        video = sink.add_stream("libx264", rate=stream.average_rate or 25)
        video.width, video.height, video.pix_fmt = stream.width, stream.height, "yuv420p"
        return video
    return sink.add_stream("aac", rate=stream.sample_rate, layout=stream.layout.name)


class _Mp4Piece:
    """One MP4 being written: its muxer, its streams, and where on the recording's timeline
    it starts (its timestamps start from there)."""

    def __init__(
        self,
        outputs: PieceOutputs,
        index: int,
        start: float,
        chosen: list[AudioStream | VideoStream],
        faststart: bool,
    ) -> None:
        self.start = start
        self.destination, self.output = outputs.open(index, start)
        options = {"movflags": "+faststart"} if faststart else {}
        self.sink = av.open(self.output, "w", format="mp4", options=options)
        self.copies: dict[int, Stream] = {}
        self.encodes: dict[int, AudioStream | VideoStream] = {}
        self.described: list[str] = []
        self.resolution = ""
        # Ticks of each source stream's time base to take off, so the piece starts at zero.
        self.shift: dict[int, int] = {}
        for stream in chosen:
            name = stream.codec_context.name
            carried = MP4_VIDEO_CODECS if stream.type == "video" else MP4_AUDIO_CODECS
            if name in carried:
                self.copies[stream.index] = self.sink.add_stream_from_template(stream)
                self.described.append(f"{stream.type}:{name} (copied)")
            else:
                self.encodes[stream.index] = _encoder_for(self.sink, stream)
                target = "h264" if stream.type == "video" else "aac"
                self.described.append(f"{stream.type}:{name} (encoded to {target})")
            if isinstance(stream, VideoStream) and stream.width:
                self.resolution = f"{stream.width}x{stream.height}"
            self.shift[stream.index] = round(start / stream.time_base) if stream.time_base else 0
        self.span = _Span()

    def write(self, packet: av.Packet) -> None:
        index = packet.stream.index
        shift = self.shift[index]
        if shift:
            packet.dts = None if packet.dts is None else packet.dts - shift
            packet.pts = None if packet.pts is None else packet.pts - shift
        if index in self.copies:
            self.span.add(packet)
            packet.stream = self.copies[index]
            self.sink.mux(packet)
            return
        encoder = self.encodes[index]
        for frame in packet.decode():
            if isinstance(frame, (AudioFrame, VideoFrame)):
                self.span.add_frame(frame)  # on the piece's clock: decoded from shifted packets
                self.sink.mux(encoder.encode(frame))  # type: ignore[arg-type]  # kinds match

    def close(self) -> TranscodeReport:
        for encoder in self.encodes.values():
            self.sink.mux(encoder.encode(None))
        self.sink.close()
        return TranscodeReport(
            self.destination,
            self.described,
            self.span.seconds,
            start_seconds=self.start,
            size_bytes=output_size(self.output),
            resolution=self.resolution,
        )


def _to_mp4(
    source: InputContainer,
    chosen: list[AudioStream | VideoStream],
    outputs: PieceOutputs,
    faststart: bool,
    max_seconds: float | None,
) -> list[TranscodeReport]:
    # Start the file at zero on one shared offset, so audio and video stay in sync; the
    # segments of a recording retried after a reconnect may restart their clock, which
    # the timeline moves on so that the MP4's timestamps only increase.
    timeline = Timeline(start=first_timestamp(chosen))
    # Pieces are cut on the video's keyframes (a piece must start with a picture a player
    # can show), or anywhere in the audio of a recording without video.
    cut_on = "video" if any(s.type == "video" for s in chosen) else "audio"
    reports: list[TranscodeReport] = []
    current = _Mp4Piece(outputs, 0, 0.0, chosen, faststart)
    # The piece before a cut stays open for the audio that the demuxer hands over after
    # the cutting keyframe but that plays before it, until the audio passes the cut.
    previous: _Mp4Piece | None = None

    def close(piece: _Mp4Piece) -> None:
        report = piece.close()
        reports.append(report)
        outputs.close(report)

    for packet in source.demux(*chosen):
        if packet.dts is None:
            continue
        timeline.place(packet)
        kind = packet.stream.type
        # When it is shown: a piece starts with its first picture at zero, as a file does.
        at = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
        if previous is not None and kind == "audio":
            if at < current.start:
                previous.write(packet)
                continue
            close(previous)
            previous = None
        if (
            max_seconds is not None
            and kind == cut_on
            and at - current.start >= max_seconds
            and (packet.is_keyframe or kind == "audio" or packet.stream.index in current.encodes)
        ):
            if previous is not None:
                close(previous)
            previous = current if cut_on == "video" and len(chosen) > 1 else None
            if previous is None:
                close(current)
            current = _Mp4Piece(outputs, len(reports) + (previous is not None), at, chosen, faststart)
        current.write(packet)
    if previous is not None:
        close(previous)
    close(current)
    return reports


class _Mp3Piece:
    def __init__(self, outputs: PieceOutputs, index: int, start: float) -> None:
        self.start = start
        self.destination, self.output = outputs.open(index, start)
        self.sink = av.open(self.output, "w", format="mp3")
        # Mono at 32 kHz, 96 kb/s CBR, LAME -q 7: for listening and for speech recognition, at
        # a fifth of the CPU of 48 kHz stereo at LAME's default -q 3. TRTC's AAC (64 kb/s
        # stereo) keeps nothing above about 15 kHz, which 32 kHz still carries; its voices
        # come from mono microphones, and ASR takes mono. LAME's time grows with samples and
        # channels, hardly with bit rate, so bits make up for -q 7 leaving out noise shaping
        # (-q 3 takes 1.5 to 1.8 times as long). bench/transcode_vs_ffmpeg.py measures it.
        self.encoder = self.sink.add_stream(
            "libmp3lame", rate=32000, layout="mono", options={"compression_level": "7"}
        )
        self.encoder.format = "fltp"  # as AAC decodes; libmp3lame's default s32p is a round trip
        self.encoder.bit_rate = 96000
        self.samples = 0

    def write(self, frame: AudioFrame) -> None:
        self.samples += frame.samples
        frame.pts = None  # the encoder counts samples; gaps are not ours to keep in MP3
        self.sink.mux(self.encoder.encode(frame))

    def close(self, source: AudioStream) -> TranscodeReport:
        self.sink.mux(self.encoder.encode(None))
        self.sink.close()
        name = source.codec_context.name
        return TranscodeReport(
            self.destination,
            [f"audio:{name} (encoded to mp3)"],
            self.samples / source.sample_rate,
            start_seconds=self.start,
            size_bytes=output_size(self.output),
        )


def _encode_mp3(
    source: InputContainer, audio: AudioStream, outputs: PieceOutputs, max_seconds: float | None
) -> list[TranscodeReport]:
    reports: list[TranscodeReport] = []
    limit = round(max_seconds * audio.sample_rate) if max_seconds is not None else None
    current = _Mp3Piece(outputs, 0, 0.0)
    written = 0  # samples in the pieces before the current one
    for frame in source.decode(audio):
        if limit is not None and current.samples >= limit:
            written += current.samples
            reports.append(current.close(audio))
            outputs.close(reports[-1])
            current = _Mp3Piece(outputs, len(reports), written / audio.sample_rate)
        current.write(frame)
    if written + current.samples == 0:
        raise TranscodeError("the recording's audio could not be decoded")
    reports.append(current.close(audio))
    outputs.close(reports[-1])
    return reports


def first_timestamp(streams: Sequence[Stream]) -> float:
    """Where a recording's timeline starts: the earliest first timestamp of `streams`."""
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
