"""Encode one simulated anchor into live FLV: a test pattern and a tone, paced in real time.

FFmpeg does the work: lavfi makes the pictures and the tone, libx264 and aac encode them,
the flv muxer writes the stream into whatever file-like object it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import av

from recorder.rooms.sim_script import SimAnchor


class Writable(Protocol):
    def write(self, data: bytes) -> int: ...


def _lavfi_graph(anchor: SimAnchor) -> str:
    outputs = []
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
) -> float:
    """Write the anchor's media from `media_from` to its end into `sink`, as live FLV.

    Media time t is the anchor's time since it joined; it is written no earlier than
    `wall_start + t` on the monotonic clock, so a late subscriber first catches up fast
    and then receives in real time. Returns the media time written up to.
    """
    source = av.open(_lavfi_graph(anchor), format="lavfi")
    out = av.open(sink, "w", format="flv", options={"flvflags": "no_duration_filesize"})
    try:
        encoders: dict[str, av.stream.Stream] = {}
        for stream in source.streams:
            if stream.type == "video":
                enc = out.add_stream(
                    "libx264",
                    rate=anchor.fps,
                    options={"preset": "ultrafast", "tune": "zerolatency", "g": str(2 * anchor.fps)},
                )
                enc.width, enc.height, enc.pix_fmt = anchor.width, anchor.height, "yuv420p"
            else:
                enc = out.add_stream("aac", rate=48000, layout="mono")
            encoders[stream.type] = enc
        end = anchor.duration
        written = media_from
        for frame in source.decode(*source.streams):
            t = media_from + float(frame.pts * frame.time_base)
            if t >= end or should_stop():
                break
            delay = wall_start + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # Shift the frame onto the anchor's timeline so a reconnecting subscriber
            # sees timestamps continue, as a relay's do.
            frame.pts += round(media_from / frame.time_base)
            enc = encoders["video" if isinstance(frame, av.VideoFrame) else "audio"]
            out.mux(enc.encode(frame))
            written = t
        for enc in encoders.values():
            out.mux(enc.encode(None))
        return written
    finally:
        out.close()
        source.close()
