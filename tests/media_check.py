"""Independent checks of media files: ffprobe (FFmpeg's CLI) and a full decode with PyAV."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av


@dataclass
class Probe:
    format_name: str
    duration: float
    streams: dict[str, dict[str, object]]  # by codec_type

    def codec(self, kind: str) -> str:
        return str(self.streams[kind]["codec_name"])

    def stream_seconds(self, kind: str) -> float:
        return float(str(self.streams[kind]["duration"]))

    def start(self, kind: str) -> float:
        return float(str(self.streams[kind].get("start_time", 0.0)))


def ffprobe(path: Path | str) -> Probe:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    data = json.loads(out)
    streams = {s["codec_type"]: s for s in data["streams"]}
    return Probe(data["format"]["format_name"], float(data["format"]["duration"]), streams)


def decode_to_end(path: Path | str) -> dict[str, float]:
    """Decode every frame; return the media time reached per stream kind. Raises on damage."""
    reached: dict[str, float] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
            if frame.pts is not None:
                end = float(frame.pts * frame.time_base)
                if isinstance(frame, av.AudioFrame):
                    end += frame.samples / frame.sample_rate
                reached[kind] = max(reached.get(kind, 0.0), end)
    return reached


def moov_before_mdat(path: Path) -> bool:
    """`faststart`: the index (moov) precedes the media (mdat), so playback starts at once."""
    data = path.read_bytes()
    offset, order = 0, []
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        order.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size < 8:
            break
        offset += size
    return "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")
