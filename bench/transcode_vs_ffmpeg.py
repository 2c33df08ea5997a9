"""Recording and transcoding cost, side by side with FFmpeg's own command line.

    python bench/transcode_vs_ffmpeg.py [--seconds 60] [--runs 5]

Makes a TRTC-like FLV clip with ffmpeg (720p 25 fps H.264 at about 1.2 Mb/s, AAC-LC 48 kHz
stereo 64 kb/s: speech, tones and a little noise), then for each step runs our code and the
ffmpeg command doing the same conversion (same encoder settings) on the same input, `--runs`
times each, and prints the median CPU seconds (user+system, all threads), the speed in
"x real time" (media seconds per CPU second: what one core converts in a second), the CPU
ratio ours/ffmpeg and the wall seconds. Our side runs in this process (no interpreter
start-up counted); ffmpeg's side is a whole process, start-up included (printed apart: on
the copy steps it is most of ffmpeg's time, so ratios below 1 are partly that).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
from cpu_time import cpu_children, cpu_self, measure

from recorder.media.capture import capture, segment_files
from recorder.media.segment_reader import SegmentReader
from recorder.media.transcode import transcode

MP3_TARGET = 200.0  # x real time on one core, Mode 00
X = "\u00d7"  # the multiplication sign, printed
# LAME's -q that our Mode 00 encodes with (recorder.media.transcode._encode_mp3); the sample
# rate, channels and bit rate of the ffmpeg row are read from our MP3 itself.
MP3_COMPRESSION_LEVEL = "7"
SPEECH = (
    "Good morning everyone. Today we will look at the quarterly numbers, then take questions "
    "from the room. Please keep your microphone muted when you are not speaking."
)


def _ffmpeg(*args: str) -> Callable[[], object]:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    return lambda: subprocess.run(command, check=True)


def _audio_graph(seconds: int) -> str:
    """Stereo 48 kHz: a looped synthetic voice (flite, when this ffmpeg has it) left of
    centre, two tone pairs with vibrato and tremolo that differ per channel, pink noise."""
    tones = (
        "aevalsrc='0.10*sin(2*PI*(220+3*sin(2*PI*5*t))*t)+0.07*sin(2*PI*329.6*t)*(0.6+0.4*sin(2*PI*0.5*t))"
        "|0.08*sin(2*PI*277.2*t)+0.07*sin(2*PI*440*t)*(0.6+0.4*cos(2*PI*0.7*t))'"
        f":s=48000:d={seconds}[m]"
    )
    noise = f"anoisesrc=color=pink:amplitude=0.02:r=48000:d={seconds},pan=stereo|c0=c0|c1=c0[n]"
    filters = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    if re.search(r"\sflite\s", filters):
        voice = (
            f"flite=text='{SPEECH}':voice=slt,aresample=48000,aloop=loop=-1:size=2147483647,"
            "pan=stereo|c0=0.9*c0|c1=0.6*c0[v]"
        )
        return f"{voice};{tones};{noise};[v][m][n]amix=inputs=3:duration=shortest:normalize=0[a]"
    return f"{tones};{noise};[m][n]amix=inputs=2:duration=shortest:normalize=0[a]"


def _make_clip(clip: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds}",
         "-filter_complex", _audio_graph(seconds), "-map", "0:v", "-map", "[a]",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-b:v", "1200k", "-maxrate", "1200k", "-bufsize", "2400k", "-g", "50",
         "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2", str(clip)],
        check=True,
    )  # fmt: skip


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def _describe(path: Path) -> str:
    """Duration and streams as ffprobe sees them (a file that plays to its end)."""
    probe = _probe(path)
    parts = []
    for s in probe["streams"]:
        if s["codec_type"] == "audio":
            rate, kbps = int(s["sample_rate"]) / 1000, int(s.get("bit_rate", 0)) // 1000
            parts.append(f"{s['codec_name']} {rate:g} kHz {s['channels']} ch {kbps} kb/s")
        else:
            parts.append(f"{s['codec_name']} {s.get('width')}x{s.get('height')}")
    return f"{float(probe['format']['duration']):.3f} s, {', '.join(parts)}"


def _decodes_to_end(path: Path) -> None:
    """Decode every frame with ffmpeg; raise on damage."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not result.stderr.strip(), result.stderr


def _loaded_lame() -> str:
    """Which libmp3lame this process encodes with (PyAV's wheel ships its own)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    found = {line.split()[-1] for line in maps.splitlines() if "mp3lame" in line}
    preload = os.environ.get("LD_PRELOAD", "")
    note = f" (LD_PRELOAD={preload}: its symbols win)" if "mp3lame" in preload else ""
    return (", ".join(sorted(found)) or "not loaded") + note


def _ffmpeg_lame() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg or not shutil.which("ldd"):
        return "unknown"
    out = subprocess.run(["ldd", ffmpeg], capture_output=True, text=True).stdout
    found = [line.split("=>")[-1].split("(")[0].strip() for line in out.splitlines() if "mp3lame" in line]
    return ", ".join(found) or "not linked"


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split(" Copyright")[0] if out else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as work:  # 0.7 GB for 600 s
        _run(Path(work), args)


def _run(work: Path, args: argparse.Namespace) -> None:
    seconds = float(args.seconds)
    clip = work / "clip.flv"
    _make_clip(clip, args.seconds)
    ours_dir, theirs_dir = work / "ours", work / "theirs"
    theirs_dir.mkdir()

    def record_ours() -> None:
        for old in segment_files(ours_dir):
            old.unlink()
        capture(str(clip), ours_dir, segment_seconds=6, read_timeout=10)

    segment_args = ["-i", str(clip), "-c", "copy", "-f", "segment", "-segment_time", "6",
                    "-segment_format", "mpegts", str(theirs_dir / "seg_%05d.ts")]  # fmt: skip
    record_ours()  # the segments the transcode rows read
    segments = segment_files(ours_dir)
    joined = "concat:" + "|".join(str(s) for s in segments)

    def decode_ours() -> None:
        with SegmentReader(segments) as reader, av.open(reader, "r", format="mpegts") as source:
            for _ in source.decode(source.streams.audio[0]):
                pass

    # The ffmpeg row encodes as we do: the same rate, channels and bit rate, the same LAME -q.
    transcode(segments, "00", work / "ours.mp3")
    mp3 = next(s for s in _probe(work / "ours.mp3")["streams"] if s["codec_type"] == "audio")
    mp3_options = [
        "-ar", str(mp3["sample_rate"]), "-ac", str(mp3["channels"]),
        "-b:a", f"{int(mp3['bit_rate']) // 1000}k", "-compression_level", MP3_COMPRESSION_LEVEL,
    ]  # fmt: skip

    rows: list[tuple[str, Callable[[], object], Callable[[], object], tuple[Path, Path] | None]] = [
        (
            "record (FLV -> TS segments, copy)",
            record_ours,
            _ffmpeg(*segment_args),
            None,
        ),
        (
            "  AAC decode alone (in Mode 00)",
            decode_ours,
            _ffmpeg("-i", joined, "-vn", "-f", "null", "-"),
            None,
        ),
        (
            "Mode 00 (MP3, encode)",
            lambda: transcode(segments, "00", work / "ours.mp3"),
            _ffmpeg("-i", joined, "-vn", "-c:a", "libmp3lame", *mp3_options, str(work / "theirs.mp3")),
            (work / "ours.mp3", work / "theirs.mp3"),
        ),
        (
            "Mode 01 (MP4 video, copy)",
            lambda: transcode(segments, "01", work / "ours01.mp4"),
            _ffmpeg("-i", joined, "-an", "-c", "copy", "-movflags", "+faststart", str(work / "theirs01.mp4")),
            (work / "ours01.mp4", work / "theirs01.mp4"),
        ),
        (
            "Mode 02 (MP4 a+v, copy)",
            lambda: transcode(segments, "02", work / "ours02.mp4"),
            _ffmpeg("-i", joined, "-c", "copy", "-movflags", "+faststart", str(work / "theirs02.mp4")),
            (work / "ours02.mp4", work / "theirs02.mp4"),
        ),
    ]
    startup_cpu, _ = measure(
        _ffmpeg("-f", "lavfi", "-i", "anullsrc", "-t", "0", "-f", "null", "-"), cpu_children, args.runs
    )

    print(
        f"{args.seconds} s of 720p25 H.264 ~1.2 Mb/s + AAC 48 kHz stereo 64 kb/s; "
        f"median of {args.runs} runs; {X} real time = media s / CPU s (one core)"
    )
    print(f"Mode 00 encoder settings, both sides: libmp3lame {' '.join(mp3_options)}")
    libavcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    print(f"ours:   PyAV {av.__version__} (libavcodec {libavcodec})")
    print(f"        libmp3lame: {_loaded_lame()}")
    print(f"ffmpeg: {_ffmpeg_version()}, libmp3lame: {_ffmpeg_lame()}")
    print(f"ffmpeg process start-up alone: {startup_cpu:.3f} CPU s (included in every ffmpeg row)\n")
    print(
        f"{'step':<34} {'ours cpu s':>10} {'ffmpeg cpu s':>12} {'cpu ratio':>9} "
        f"{'ours ' + X + 'RT':>9} {'ffmpeg ' + X + 'RT':>10} {'ours wall s':>11} {'ffmpeg wall s':>13}"
    )
    results: dict[str, tuple[float, float]] = {}
    for name, ours, theirs, _outputs in rows:
        ours_cpu, ours_wall = measure(ours, cpu_self, args.runs)
        theirs_cpu, theirs_wall = measure(theirs, cpu_children, args.runs)
        results[name] = (ours_cpu, theirs_cpu)
        print(
            f"{name:<34} {ours_cpu:>10.3f} {theirs_cpu:>12.3f} {ours_cpu / theirs_cpu:>9.2f} "
            f"{seconds / ours_cpu:>8.0f}{X} {seconds / theirs_cpu:>9.0f}{X} "
            f"{ours_wall:>11.3f} {theirs_wall:>13.3f}"
        )

    print("\noutputs (ffprobe duration, streams; decoded to the end by ffmpeg):")
    for name, _ours, _theirs, outputs in rows:
        if outputs is None:
            continue
        for side, path in zip(("ours", "ffmpeg"), outputs, strict=True):
            _decodes_to_end(path)
            print(f"  {name:<28} {side:<7} {_describe(path)}")

    ours_cpu, theirs_cpu = results["Mode 00 (MP3, encode)"]
    ours_speed, theirs_speed = seconds / ours_cpu, seconds / theirs_cpu
    verdict = "met" if ours_speed >= MP3_TARGET else "NOT met"
    print(
        f"\nMP3 mode \u2265 {MP3_TARGET:.0f}{X} real time on one core: {verdict} "
        f"(ours {ours_speed:.0f}{X}, ffmpeg {theirs_speed:.0f}{X} with the same settings)"
    )


if __name__ == "__main__":
    main()
