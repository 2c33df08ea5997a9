"""Pictures that show at a glance whether a recording is good: a poster frame of its video
(JPEG) and a waveform of its audio (PNG), each of the whole recording or of a window of it.

A window is `start_seconds` to `end_seconds` on the transcoder's timeline: the packets are
demuxed and placed on a `Timeline` exactly as `transcode._to_mp4` places them, so a piece of
a recording cut by the transcoder and its preview describe the same media. Only PyAV and
numpy: FFmpeg's own `mjpeg` and `png` encoders write the pictures. Each picture is written
under a temporary name and renamed when whole: a file with the final name is complete.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from recorder.media.segment_reader import SegmentReader
from recorder.media.timeline import Timeline

# The transcoder's own start of the timeline (the earliest first timestamp of the streams it
# converts), so that "seconds from the recording's start" cannot drift apart between the two.
from recorder.media.transcode import first_timestamp

# Poster: how far into the window the picture is taken. Not the first frame: a stream that
# starts shows black or frozen frames while a camera opens, and WebRTC's bandwidth estimate
# ramps up over the first seconds, so the earliest frames are blocky. A tenth of the window,
# at most 5 s, is past that and still shows the window's beginning (who is there). When the
# window's length is unknown (it runs to the recording's end) the 5 s are taken too: a
# recording shorter than that gets its last frame, which is past the start as well.
POSTER_LEAD_FRACTION = 0.1
POSTER_LEAD_MAX_SECONDS = 5.0
# A keyframe decodes alone, any other frame needs its whole group of pictures (GOP) decoded
# first. So the poster is the first keyframe after the target when one comes this soon
# (one frame decoded); otherwise the GOP holding the target is decoded up to it.
KEYFRAME_WAIT_SECONDS = 2.0
# Packets held of one GOP (a minute at 25 fps): a source that sends keyframes further apart
# gets its poster from a keyframe only, and memory stays bounded.
MAX_GOP_PACKETS = 1500
POSTER_QUALITY = 3  # JPEG quantiser as `ffmpeg -q:v`: 2 best .. 31 worst

# Waveform: levels in dB over this range, so that speech at -20 to -30 dBFS fills a good
# part of the picture (on a linear scale it would be a thin sliver) while silence, and the
# noise floor of a muted microphone, stays a flat line.
WAVEFORM_DB_RANGE = 60.0
BACKGROUND = (255, 255, 255)
AXIS = (214, 214, 214)  # where the recording has no audio at all: a gap, or past its end
PEAK = (126, 166, 218)  # the loudest sample of each column
RMS = (28, 76, 140)  # the average loudness; also silence's flat line
# Audio packets decoded before the window, so that the decoder's first output (which leans
# on the packet before it) lies outside the window.
AUDIO_PRIMING_SECONDS = 0.1
# Samples reduced at once: per-frame numpy calls would cost more than decoding the audio.
CHUNK_SAMPLES = 1 << 15
# Samples closer than this to where the previous frame ended continue it (timestamps on a
# 90 kHz clock do not count 44.1 kHz samples exactly, and the timeline nudges some by 1 ms).
CONTIGUOUS_SECONDS = 0.002
# With the window's end unknown, columns start this short and double when the recording
# outgrows them: memory is bounded by the picture, not by the recording.
FIRST_BIN_SECONDS = 0.001


@dataclass
class Preview:
    path: Path
    kind: str  # "poster" or "waveform"
    width: int
    height: int


class PreviewError(RuntimeError):
    """No preview can be made of the recording (or of its window); the message says why."""


@dataclass(frozen=True)
class _Window:
    start: float
    end: float | None  # None: to the recording's end

    @classmethod
    def of(cls, start: float, end: float | None) -> _Window:
        if not math.isfinite(start) or start < 0:
            raise PreviewError(f"the window cannot start at {start} s")
        if end is not None and not math.isfinite(end):
            raise PreviewError(f"the window cannot end at {end} s")
        if end is not None and not end > start:
            raise PreviewError(f"the window from {start:g} s to {end:g} s is empty")
        return cls(start, end)

    def lacks(self, kind: str) -> str:
        """The message for a window with none of `kind` ("video", "audio")."""
        if self.end is not None:
            return f"the recording has no {kind} between {self.start:g} s and {self.end:g} s"
        if self.start > 0:
            return f"the recording has no {kind} after {self.start:g} s"
        return f"the recording has no {kind}"


def poster_frame(
    segments: Sequence[Path],
    destination: Path,
    *,
    start_seconds: float = 0.0,
    end_seconds: float | None = None,
    max_width: int = 1280,
) -> Preview:
    """Write `destination`, a JPEG of one video frame inside the window, in the source's
    aspect ratio and at most `max_width` wide."""
    if max_width < 2:
        raise ValueError(f"max_width must be at least 2, not {max_width}")
    window = _Window.of(start_seconds, end_seconds)
    with _reading(segments) as source:
        video = _first_video(source)
        if video is None:
            raise PreviewError("the recording has no video")
        frame, aspect = _pick_poster(source, video, window)
    try:
        picture = _fit(frame, aspect, max_width)
        data = _encode_jpeg(picture)
    except (av.FFmpegError, ValueError) as exc:
        raise PreviewError(f"the poster frame could not be encoded: {exc}") from exc
    _write_whole(destination, data)
    return Preview(destination, "poster", picture.width, picture.height)


def waveform(
    segments: Sequence[Path],
    destination: Path,
    *,
    start_seconds: float = 0.0,
    end_seconds: float | None = None,
    width: int = 1200,
    height: int = 240,
) -> Preview:
    """Write `destination`, a PNG of the audio's loudness over the window: per column the
    peak (light) and RMS (dark) level, mirrored around a mid line."""
    if width < 2 or height < 2:
        raise ValueError(f"a waveform needs at least 2x2 pixels, not {width}x{height}")
    window = _Window.of(start_seconds, end_seconds)
    with _reading(segments) as source:
        audio = _first_audio(source)
        if audio is None:
            raise PreviewError("the recording has no audio")
        levels = _measure_audio(source, audio, window, width)
    peak, rms, heard = levels.columns(width)
    image = _draw_waveform(peak, rms, heard, height)
    try:
        data = _encode_png(image)
    except (av.FFmpegError, ValueError) as exc:
        raise PreviewError(f"the waveform could not be encoded: {exc}") from exc
    _write_whole(destination, data)
    return Preview(destination, "waveform", width, height)


# --- reading the recording -------------------------------------------------------------


@contextmanager
def _reading(segments: Sequence[Path]) -> Iterator[InputContainer]:
    """The recording's segments opened as one MPEG-TS; FFmpeg's and the file system's errors
    become PreviewError."""
    if not segments:
        raise PreviewError("the recording has no media on disk")
    try:
        with SegmentReader(segments) as reader, av.open(reader, "r", format="mpegts") as source:
            yield source
    except (av.FFmpegError, OSError) as exc:
        raise PreviewError(f"the recording cannot be read: {exc}") from exc


def _first_video(source: InputContainer) -> VideoStream | None:
    return next(iter(source.streams.video), None)


def _first_audio(source: InputContainer) -> AudioStream | None:
    return next(iter(source.streams.audio), None)


def _placed_packets(source: InputContainer) -> Iterator[av.Packet]:
    """The packets of the first video and first audio stream (the streams Mode "02"
    converts), each placed on the timeline as the transcoder places it."""
    first = (_first_video(source), _first_audio(source))
    chosen: list[VideoStream | AudioStream] = [s for s in first if s is not None]
    timeline = Timeline(start=first_timestamp(chosen))
    for packet in source.demux(*chosen):
        if packet.dts is None:
            continue
        timeline.place(packet)
        yield packet


def _seconds(packet: av.Packet, time_base: float) -> float:
    return (packet.pts if packet.pts is not None else packet.dts) * time_base  # type: ignore[operator]


# --- poster ---------------------------------------------------------------------------


def _pick_poster(source: InputContainer, video: VideoStream, window: _Window) -> tuple[VideoFrame, Fraction]:
    """The decoded frame for the poster, and the pixels' aspect ratio.

    Demuxing is cheap and decoding is not: packets are only held (the GOP in progress)
    until the target is passed; then one keyframe, or one GOP up to the target, is decoded."""
    start, end = window.start, window.end
    lead = (
        POSTER_LEAD_MAX_SECONDS
        if end is None
        else min(POSTER_LEAD_FRACTION * (end - start), POSTER_LEAD_MAX_SECONDS)
    )
    target = start + lead
    time_base = float(video.time_base or 0)
    gop: list[av.Packet] = []  # from the latest keyframe on; empty before one, or when too long
    held: list[av.Packet] | None = None  # the GOP up to the first packet at or after the target
    seen = False  # any video packet inside the window
    for packet in _placed_packets(source):
        if packet.stream_index != video.index:
            continue
        at = _seconds(packet, time_base)
        if end is not None and packet.dts * time_base >= end:  # type: ignore[operator]
            break
        seen = seen or at >= start
        if packet.is_keyframe:
            if at >= target:
                return _decode_poster(video, [packet], target, window)
            gop = [packet]
        elif gop:
            gop.append(packet)
            if len(gop) > MAX_GOP_PACKETS:
                gop = []
        if held is None and at >= target:
            held = list(gop)
        if held and at >= target + KEYFRAME_WAIT_SECONDS:
            break
    if not seen:
        raise PreviewError(window.lacks("video"))
    # The window ended before the target (it is short, or the recording is): its last GOP.
    return _decode_poster(video, gop if held is None else held, target, window)


def _decode_poster(
    video: VideoStream, packets: list[av.Packet], target: float, window: _Window
) -> tuple[VideoFrame, Fraction]:
    """Decode `packets` (a keyframe and what follows it) up to the first frame inside the
    window at or after `target`; else the last frame inside the window."""
    codec = video.codec_context
    chosen: VideoFrame | None = None

    def inside(frame: VideoFrame) -> bool:
        if frame.pts is None or frame.time_base is None:
            return False
        at = float(frame.pts * frame.time_base)
        return at >= window.start and (window.end is None or at < window.end)

    def reached(frames: list[VideoFrame]) -> bool:
        nonlocal chosen
        for frame in frames:
            if inside(frame):
                chosen = frame
                if float(frame.pts * frame.time_base) >= target:  # type: ignore[operator]
                    return True
        return False

    try:
        for packet in packets:
            if reached(codec.decode(packet)):
                break
        else:
            reached(codec.decode(None))
    except av.FFmpegError as exc:
        raise PreviewError(f"the recording's video cannot be decoded: {exc}") from exc
    if chosen is None:
        raise PreviewError(window.lacks("decodable video"))
    aspect = codec.sample_aspect_ratio or video.sample_aspect_ratio or Fraction(1)
    return chosen, Fraction(aspect)


def _fit(frame: VideoFrame, aspect: Fraction, max_width: int) -> VideoFrame:
    """The frame in square pixels as the source is shown, at most `max_width` wide, in even
    dimensions, full-range YUV as JPEG has it."""
    shown_width = frame.width * float(aspect)
    scale = min(1.0, max_width / shown_width)
    width = _even(shown_width * scale)
    height = _even(frame.height * scale)
    return frame.reformat(
        width=width, height=height, format="yuv420p", interpolation="AREA", dst_color_range="JPEG"
    )


def _even(size: float) -> int:
    return max(2, int(size + 1e-6) // 2 * 2)  # 1e-6: a width scaled to 1280 may come out 1279.99...


def _encode_jpeg(picture: VideoFrame) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = picture.width, picture.height, "yuv420p"
    codec.color_range = 2  # JPEG (full) range: what yuv420p means to the mjpeg encoder then
    codec.time_base = Fraction(1, 1)
    codec.qscale = True
    codec.global_quality = POSTER_QUALITY
    picture.pts = None
    return b"".join(bytes(p) for p in [*codec.encode(picture), *codec.encode(None)])


# --- waveform -------------------------------------------------------------------------


def _measure_audio(source: InputContainer, audio: AudioStream, window: _Window, width: int) -> _Levels:
    """Decode the window's audio into per-column levels."""
    start, end = window.start, window.end
    if end is None:
        levels = _Levels(start, FIRST_BIN_SECONDS, 2 * width, growable=True)
    else:
        levels = _Levels(start, (end - start) / width, width, growable=False)
    # Seconds per tick of each stream: Fractions per packet would cost more than the decoding.
    time_bases = {s.index: float(s.time_base or 0) for s in source.streams}
    chunk = _Chunk(levels, time_bases[audio.index])
    codec = audio.codec_context
    recording_end = 0.0
    try:
        for packet in _placed_packets(source):
            index = packet.stream_index
            time_base = time_bases[index]
            at = _seconds(packet, time_base)
            ends = at + (packet.duration or 0) * time_base
            recording_end = max(recording_end, ends)
            if index != audio.index:
                continue
            if end is not None and at >= end:
                break
            if ends < start - AUDIO_PRIMING_SECONDS:
                continue  # before the window: demuxed and placed, not decoded
            for frame in codec.decode(packet):
                chunk.add(frame)
        for frame in codec.decode(None):
            chunk.add(frame)
    except av.FFmpegError as exc:
        raise PreviewError(f"the recording's audio cannot be decoded: {exc}") from exc
    chunk.flush()
    if not levels.heard_any():
        raise PreviewError(window.lacks("audio"))
    # To the recording's end: a recording whose audio stops before its video shows it.
    levels.extend_to(end if end is not None else recording_end)
    return levels


class _Levels:
    """Peak and sum of squares of the samples in consecutive stretches ("bins") of time from
    `start`. A growable one doubles its bins' length (merging pairs) rather than grow past
    `capacity`; a fixed one drops what lies past its last bin."""

    def __init__(self, start: float, bin_seconds: float, capacity: int, *, growable: bool) -> None:
        assert capacity % 2 == 0 or not growable, "bins merge in pairs"
        self.start = start
        self.bin_seconds = bin_seconds
        self.capacity = capacity
        self.growable = growable
        self.peak = np.zeros(capacity)
        self.squares = np.zeros(capacity)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.used = 0  # bins up to the last one the media reaches

    def add(self, at: float, rate: int, samples: np.ndarray) -> None:
        """Samples (one row per channel) of which the first is at `at` s, `rate` per second."""
        skip = max(0, math.ceil((self.start - at) * rate))  # before the first bin
        if skip:
            at, samples = at + skip / rate, samples[:, skip:]
        offset = at - self.start  # of the first sample from the first bin's start
        if self.growable:
            while (offset + (samples.shape[1] - 1) / rate) / self.bin_seconds >= self.capacity:
                self._halve()
        else:  # not past the last bin (the window's end)
            samples = samples[:, : math.ceil((self.capacity * self.bin_seconds - offset) * rate)]
        count = samples.shape[1]
        if count == 0:
            return
        span = np.abs(samples).max(axis=0)
        squares = np.einsum("ij,ij->j", samples, samples, dtype=np.float64)
        low = min(int(offset / self.bin_seconds), self.capacity - 1)
        high = min(int((offset + (count - 1) / rate) / self.bin_seconds), self.capacity - 1)
        # Where each bin begins, as an index into the samples.
        edges = np.arange(low + 1, high + 1) * self.bin_seconds - offset
        starts = np.clip(np.concatenate(([0], np.ceil(edges * rate).astype(np.int64))), 0, count)
        counts = np.diff(np.append(starts, count))
        # Bins shorter than a sample's period may hold none; reduceat needs increasing starts.
        full = counts > 0
        bins, starts, counts = np.arange(low, high + 1)[full], starts[full], counts[full]
        self.peak[bins] = np.maximum(self.peak[bins], np.maximum.reduceat(span, starts))
        self.squares[bins] += np.add.reduceat(squares, starts)
        self.count[bins] += counts * samples.shape[0]
        self.used = max(self.used, high + 1)

    def _halve(self) -> None:
        for values in (self.peak, self.squares, self.count):
            pairs = values.reshape(-1, 2)
            merged = pairs.max(axis=1) if values is self.peak else pairs.sum(axis=1)
            values[:] = 0
            values[: merged.size] = merged
        self.bin_seconds *= 2
        self.used = (self.used + 1) // 2

    def heard_any(self) -> bool:
        return bool(self.count.any())

    def extend_to(self, end: float) -> None:
        """Bins reach `end` (seconds on the timeline); those without audio stay empty."""
        wanted = math.ceil((end - self.start) / self.bin_seconds - 1e-9)
        if self.growable:
            while wanted > self.capacity:
                self._halve()
                wanted = math.ceil((end - self.start) / self.bin_seconds - 1e-9)
        self.used = max(self.used, min(wanted, self.capacity))

    def columns(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Peak, RMS and "has samples" per column, the used bins spread over `width` columns.

        Each column takes the bins from its first to the next column's first; where there
        are fewer bins than columns, reduceat gives a column its first bin alone (a short
        recording is stretched to the picture's width)."""
        used = max(self.used, 1)
        firsts = np.arange(width) * used // width
        peak = np.maximum.reduceat(self.peak[:used], firsts)
        squares = np.add.reduceat(self.squares[:used], firsts)
        count = np.add.reduceat(self.count[:used], firsts)
        rms = np.sqrt(squares / np.maximum(count, 1))
        return peak, rms, count > 0


class _Chunk:
    """Gathers consecutive decoded frames and hands their samples to `_Levels` in chunks."""

    def __init__(self, levels: _Levels, time_base: float) -> None:
        self.levels = levels
        self.time_base = time_base  # of the decoded frames' timestamps: their stream's
        self.rows: list[list[np.ndarray]] = []  # per channel, the frames' samples
        self.at = 0.0  # of the first sample
        self.rate = 0
        self.samples = 0

    def add(self, frame: AudioFrame) -> None:
        rows = _float_rows(frame)
        rate, pts = frame.sample_rate, frame.pts
        follows = self.at + self.samples / rate
        at = follows if pts is None else pts * self.time_base
        if self.rows and (
            rate != self.rate or len(rows) != len(self.rows) or abs(at - follows) > CONTIGUOUS_SECONDS
        ):
            self.flush()
        if not self.rows:
            self.rows, self.at, self.rate = [[] for _ in rows], at, rate
        for gathered, row in zip(self.rows, rows, strict=True):
            gathered.append(row)
        self.samples += frame.samples
        if self.samples >= CHUNK_SAMPLES:
            self.flush()

    def flush(self) -> None:
        if self.rows and self.samples:
            samples = np.stack([np.concatenate(row) for row in self.rows])
            self.levels.add(self.at, self.rate, samples)
            self.at += self.samples / self.rate
        self.rows, self.samples = [], 0


def _float_rows(frame: AudioFrame) -> list[np.ndarray]:
    """The frame's samples per channel, as floats in -1..1."""
    if frame.format.name == "fltp":  # what FFmpeg's AAC decoder gives: no copy
        return [np.frombuffer(memoryview(plane), np.float32, frame.samples) for plane in frame.planes]
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    if data.dtype.kind == "u":  # unsigned 8 bit
        data = (data.astype(np.float32) - 128) / 128
    elif data.dtype.kind == "i":
        data = data.astype(np.float32) / 2.0 ** (8 * data.dtype.itemsize - 1)
    return list(data.astype(np.float32, copy=False))


def _level(amplitude: np.ndarray) -> np.ndarray:
    """Amplitude (0..1) as height (0..1) on the dB scale."""
    with np.errstate(divide="ignore"):
        decibels = 20 * np.log10(amplitude)
    return np.clip(1 + decibels / WAVEFORM_DB_RANGE, 0.0, 1.0)


def _draw_waveform(peak: np.ndarray, rms: np.ndarray, heard: np.ndarray, height: int) -> np.ndarray:
    """An RGB picture (height x columns x 3): the levels mirrored around the mid line."""
    # Distance of each row's centre from the picture's middle, in pixels.
    distance = np.abs(np.arange(height) + 0.5 - height / 2)[:, None]
    half = height / 2
    # At least the mid line (half a pixel each side), so silence shows as a flat line.
    peak_reach = np.maximum(_level(peak) * half, 0.5)[None, :]
    rms_reach = np.maximum(_level(rms) * half, 0.5)[None, :]
    image = np.empty((height, peak.shape[0], 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image[(distance <= 0.5) & ~heard[None, :]] = AXIS
    image[(distance <= peak_reach) & heard[None, :]] = PEAK
    image[(distance <= rms_reach) & heard[None, :]] = RMS
    return image


def _encode_png(image: np.ndarray) -> bytes:
    codec = av.CodecContext.create("png", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    codec.time_base = Fraction(1, 1)
    frame = VideoFrame.from_ndarray(image, format="rgb24")
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


# --- writing --------------------------------------------------------------------------


def _write_whole(destination: Path, data: bytes) -> None:
    partial = destination.with_name(destination.name + ".part")
    try:
        partial.write_bytes(data)
        os.replace(partial, destination)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise PreviewError(f"the preview cannot be written to {destination}: {exc}") from exc
