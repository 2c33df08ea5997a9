"""Encode one simulated anchor into live FLV: a test pattern and a tone, paced in real time.

FFmpeg does the work: lavfi makes the pictures and the tone, libx264 and aac encode them,
the flv muxer writes the stream into whatever file-like object it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import av
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from recorder.rooms.sim_script import SimAnchor


class Writable(Protocol):
    def write(self, data: bytes) -> int: ...


def _lavfi_graph(anchor: SimAnchor) -> str:
    outputs: list[str] = []
    if anchor.video:
        outputs.append(f"testsrc2=size={anchor.width}x{anchor.height}:rate={anchor.fps}[out{len(outputs)}]")
    if anchor.audio:
        outputs.append(f"sine=frequency={anchor.tone_hz}:sample_rate=48000[out{len(outputs)}]")
    return ";".join(outputs)


def publish_flv(
    anchor: SimAnchor,
    sink: Writable,
    wall_start: float,
    media_from: float,
    should_stop: Callable[[], bool],
) -> None:
    """Write the anchor's media from `media_from` to its end into `sink`, as live FLV.

    Media time t is the anchor's time since it joined; it is written no earlier than
    `wall_start + t` on the monotonic clock, so a late subscriber first catches up fast
    and then receives in real time.
    """
    with (
        av.open(_lavfi_graph(anchor), "r", format="lavfi") as source,
        av.open(sink, "w", format="flv", options={"flvflags": "no_duration_filesize"}) as out,
    ):
        video: VideoStream | None = None
        audio: AudioStream | None = None
        if anchor.video:
            video = out.add_stream(
                "libx264",
                rate=anchor.fps,
                options={"preset": "ultrafast", "tune": "zerolatency", "g": str(2 * anchor.fps)},
            )
            video.width, video.height, video.pix_fmt = anchor.width, anchor.height, "yuv420p"
        if anchor.audio:
            audio = out.add_stream("aac", rate=48000, layout="mono")
        for frame in source.decode(*source.streams):
            if frame.pts is None or frame.time_base is None:
                continue
            t = media_from + float(frame.pts * frame.time_base)
            if t >= anchor.duration or should_stop():
                break
            delay = wall_start + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # Shift the frame onto the anchor's timeline so a reconnecting subscriber
            # sees timestamps continue, as a relay's do.
            frame.pts += round(media_from / frame.time_base)
            if isinstance(frame, VideoFrame) and video is not None:
                out.mux(video.encode(frame))
            elif isinstance(frame, AudioFrame) and audio is not None:
                out.mux(audio.encode(frame))
        for encoder in (video, audio):
            if encoder is not None:
                out.mux(encoder.encode(None))
