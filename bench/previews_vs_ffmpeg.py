"""What previews cost, side by side with FFmpeg's own command line.

    python bench/previews_vs_ffmpeg.py [--minutes 20] [--runs 3]

Makes a TRTC-like MPEG-TS recording with ffmpeg (640x360 25 fps H.264, a keyframe every 2 s;
AAC-LC 48 kHz stereo 64 kb/s) and cuts it into 6 s segments as the capture leaves them. Then
draws, `--runs` times each, our previews and the ffmpeg commands that draw the same pictures:

- waveform (recorder.media.preview.waveform) vs `ffmpeg -filter_complex showwavespic`;
- poster from the middle (poster_frame over the second half) vs `ffmpeg -ss T -i … -frames:v 1`
  (input seeking: ffmpeg jumps with the index of the concatenated file, we demux up to T).

Prints the median CPU seconds (user+system), the ratio ours/ffmpeg, and the waveform's speed
in minutes of audio per CPU second. Our side runs in this process; ffmpeg's side is a whole
process, start-up included.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from cpu_time import cpu_children, cpu_self, measure

from recorder.media.preview import poster_frame, waveform

SEGMENT_SECONDS = 6


def _make_recording(folder: Path, seconds: int) -> tuple[Path, list[Path]]:
    whole = folder / "whole.ts"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=f=220:r=48000:d={seconds},volume=0.3,pan=stereo|c0=c0|c1=c0",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", "600k",
         "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2", str(whole)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(whole), "-c", "copy",
         "-f", "segment", "-segment_time", str(SEGMENT_SECONDS), "-segment_format", "mpegts",
         str(folder / "seg_%05d.ts")],
        check=True,
    )  # fmt: skip
    return whole, sorted(folder.glob("seg_*.ts"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=20, help="length of the recording (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    args = parser.parse_args()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        whole, segments = _make_recording(folder, seconds)
        made = time.perf_counter() - started
        print(f"{args.minutes} min recording, {len(segments)} segments, made in {made:.0f} s")
        middle = seconds / 2

        rows = [
            (
                "waveform 1200x240",
                lambda: waveform(segments, folder / "ours.png"),
                ["-i", str(whole), "-filter_complex", "showwavespic=s=1200x240:split_channels=0",
                 "-frames:v", "1", str(folder / "ffmpeg.png")],
            ),
            (
                f"poster at {middle:.0f} s",
                lambda: poster_frame(segments, folder / "ours.jpg", start_seconds=middle),
                ["-ss", f"{middle + 5:.0f}", "-i", str(whole), "-frames:v", "1", "-q:v", "3",
                 str(folder / "ffmpeg.jpg")],
            ),
        ]  # fmt: skip
        print(f"{'preview':<22}{'ours CPU s':>12}{'ffmpeg CPU s':>14}{'ours/ffmpeg':>13}")
        for name, ours, ffmpeg_args in rows:
            command = ["ffmpeg", "-nostdin", "-v", "error", "-y", *ffmpeg_args]
            our_cpu, _ = measure(ours, cpu_self, args.runs)
            their_cpu, _ = measure(lambda c=command: subprocess.run(c, check=True), cpu_children, args.runs)
            print(f"{name:<22}{our_cpu:>12.2f}{their_cpu:>14.2f}{our_cpu / their_cpu:>13.2f}")
            if name.startswith("waveform"):
                print(f"{'':<22}{args.minutes / our_cpu:>12.1f} min of audio per CPU second (ours)")


if __name__ == "__main__":
    main()
