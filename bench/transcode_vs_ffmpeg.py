"""Recording and transcoding cost, side by side with FFmpeg's own command line.

    python bench/transcode_vs_ffmpeg.py [--seconds 60] [--runs 5]

Makes a 720p30 H.264 + AAC (2 Mb/s) FLV clip with ffmpeg, then for each step runs our code
and the equivalent ffmpeg command on the same input, `--runs` times each, and prints the
median CPU seconds (user+system, all threads) and wall seconds, and the ratio ours/ffmpeg.
Our side runs in this process (no interpreter start-up counted); ffmpeg's side is a whole
process, start-up included: ratios below 1 are partly that.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from recorder.media.capture import capture, segment_files
from recorder.media.transcode import transcode


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(action: Callable[[], object], cpu: Callable[[], float], runs: int) -> tuple[float, float]:
    cpus, walls = [], []
    for _ in range(runs):
        c0, w0 = cpu(), time.perf_counter()
        action()
        cpus.append(cpu() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(cpus), statistics.median(walls)


def _ffmpeg(*args: str) -> Callable[[], object]:
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    return lambda: subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="recorder-bench-"))
    clip = work / "clip.flv"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={args.seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={args.seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "2M", "-g", "60",
         "-c:a", "aac", "-ac", "1", str(clip)],
        check=True,
    )  # fmt: skip
    ours_dir, theirs_dir = work / "ours", work / "theirs"
    theirs_dir.mkdir()

    def record_ours() -> None:
        for old in segment_files(ours_dir):
            old.unlink()
        capture(str(clip), ours_dir, segment_seconds=6, read_timeout=10)

    rows = [
        (
            "record (FLV -> TS segments, copy)",
            record_ours,
            _ffmpeg(
                "-i",
                str(clip),
                "-c",
                "copy",
                "-f",
                "segment",
                "-segment_time",
                "6",
                "-segment_format",
                "mpegts",
                str(theirs_dir / "seg_%05d.ts"),
            ),
        )
    ]
    record_ours()  # the segments the transcode rows read
    segments = segment_files(ours_dir)
    joined = "concat:" + "|".join(str(s) for s in segments)
    rows += [
        (
            "Mode 00 (MP3, encode)",
            lambda: transcode(segments, "00", work / "ours.mp3"),
            _ffmpeg("-i", joined, "-vn", "-c:a", "libmp3lame", "-b:a", "64k", str(work / "theirs.mp3")),
        ),
        (
            "Mode 01 (MP4 video, copy)",
            lambda: transcode(segments, "01", work / "ours01.mp4"),
            _ffmpeg("-i", joined, "-an", "-c", "copy", "-movflags", "+faststart", str(work / "theirs01.mp4")),
        ),
        (
            "Mode 02 (MP4 a+v, copy)",
            lambda: transcode(segments, "02", work / "ours02.mp4"),
            _ffmpeg("-i", joined, "-c", "copy", "-movflags", "+faststart", str(work / "theirs02.mp4")),
        ),
    ]
    print(f"{args.seconds} s of 720p30 H.264 2 Mb/s + AAC; median of {args.runs} runs\n")
    print(
        f"{'step':<36} {'ours cpu s':>10} {'ffmpeg cpu s':>12} {'cpu ratio':>9} "
        f"{'ours wall s':>11} {'ffmpeg wall s':>13}"
    )
    for name, ours, theirs in rows:
        ours_cpu, ours_wall = _measure(ours, _cpu_self, args.runs)
        theirs_cpu, theirs_wall = _measure(theirs, _cpu_children, args.runs)
        print(
            f"{name:<36} {ours_cpu:>10.3f} {theirs_cpu:>12.3f} {ours_cpu / theirs_cpu:>9.2f} "
            f"{ours_wall:>11.3f} {theirs_wall:>13.3f}"
        )


if __name__ == "__main__":
    main()
