"""Time to file: from the moment a stream ends to its callback, per Mode, length and storage.

    python bench/time_to_file.py [--minutes 1 10 60] [--modes 00 01 02] [--storage local cos]
                                 [--speed 50] [--mp3-speed 15] [--no-reference]

A 720p25 H.264 (1.2 Mb/s, a keyframe every 2 s) + AAC (48 kHz stereo, 64 kb/s) clip of 60 s
is made once with ffmpeg, then for each row published N times in a row (`-stream_loop`) by
stream copy into a real nginx-rtmp on loopback, as a TRTC relay pushes, but `--speed` times
faster than real time (`-readrate`) so an hour takes a minute. The recorder side is the
code a record task runs, in this process: `record_take` pulling the stream into segments,
with `LiveFinisher` converting and storing beside it; then the file's callback, a POST to a
loopback receiver. For COS the storage is the loopback COS stand-in of the tests (the real
SDK, real HTTP).

"time to file" is from the publisher's exit (the stream's end) to the callback's arrival.
"reference" rows (unless --no-reference) turn live finishing off: the file is converted and
stored after the stream ends, as before; the ratio says how much sooner live finishing is.
"disk MB" is the high-water mark of the take's work folder (segments, spooled parts, local
output), sampled every 0.2 s. Note the feed: at 50x real time the conversion must keep up
with 50 s of media a second; live, a stream arrives at 1x, so a row that lags here is a row
the speed-up made lag, which is why the table also gives the lag at the stream's end. Mode 00
is fed slower (--mp3-speed): its MP3 encoding runs at about 95x real time on one core, so a
50x feed sharing two cores with the capture, nginx and the publisher outruns it; live, at
1x, it takes about 1 % of a core.

Targets: callback <= 2 s after the stream ends for a 60 min recording, in every Mode;
local disk <= 512 MB for a 60 min 720p recording to COS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' nginx-rtmp and COS stand-in

from recorder.live_finish import LiveFinisher  # noqa: E402
from recorder.media.capture import segment_files  # noqa: E402
from recorder.media.transcode import EXTENSIONS, transcode  # noqa: E402
from recorder.recording import record_take  # noqa: E402
from recorder.request import CosLocation  # noqa: E402
from recorder.settings import RecorderSettings  # noqa: E402
from recorder.storage import open_storage  # noqa: E402
from recorder.storage.keys import recording_key  # noqa: E402
from recorder.workspace import Take  # noqa: E402
from tests.cos_endpoint import CosEndpoint  # noqa: E402
from tests.nginx_rtmp import NginxRtmp  # noqa: E402

CLIP_SECONDS = 60
TARGET_SECONDS = 2.0
TARGET_DISK_MB = 512
SECRET_ID, SECRET_KEY = "AKIDbench", "bench-key"
BUCKET, REGION = "bench-1250000000", "ap-guangzhou"
MB = 1_000_000
# Bounds: never reached when things work.
ON_AIR_SECONDS = 30.0
SAMPLE_SECONDS = 0.2


@dataclass
class Row:
    minutes: int
    mode: str
    storage: str
    live: bool
    seconds_to_file: float
    lag_mb: float  # recording not yet converted when the stream ended
    disk_mb: float
    file_mb: float
    how: str


class _Receiver:
    """A loopback callback receiver: when each POST arrived."""

    def __init__(self) -> None:
        arrivals: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrivals.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.arrivals = arrivals
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _DiskSampler:
    """The high-water mark of a folder's size, sampled in the background."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _size(self) -> int:
        total = 0
        with os.scandir(self.folder) as entries:
            for entry in entries:
                try:
                    total += entry.stat().st_size
                except FileNotFoundError:
                    continue  # removed while we looked
        return total

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self._size())

    def stop(self) -> int:
        self.peak = max(self.peak, self._size())
        self._done.set()
        self._thread.join(timeout=5)
        return self.peak


def _make_clip(path: Path) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={CLIP_SECONDS}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={CLIP_SECONDS}",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1200k", "-maxrate", "1200k",
         "-bufsize", "2400k", "-g", "50", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-ac", "2", "-b:a", "64k", str(path)],
        check=True,
    )  # fmt: skip


def _on_air(server: NginxRtmp, stream: str) -> None:
    deadline = time.monotonic() + ON_AIR_SECONDS
    while time.monotonic() < deadline:
        if f"<name>{stream}</name>" in httpx.get(server.stat_url, timeout=5).text:
            return
        time.sleep(0.05)
    raise RuntimeError(f"stream {stream} did not reach nginx in {ON_AIR_SECONDS:g} s")


def _settings(storage: str, live: bool, cos: CosEndpoint | None) -> RecorderSettings:
    options: dict[str, object] = {"reconnect_seconds": 0, "live_finish": live, "storage": storage}
    if cos is not None:
        options |= {"cos_scheme": "http", "cos_ip": cos.host, "cos_port": cos.port}
    return RecorderSettings(**options)  # type: ignore[arg-type]


def run_one(
    server: NginxRtmp,
    clip: Path,
    work: Path,
    receiver: _Receiver,
    cos: CosEndpoint | None,
    number: int,
    minutes: int,
    mode: str,
    storage_name: str,
    live: bool,
    speed: float,
) -> Row:
    settings = _settings(storage_name, live, cos)
    location = CosLocation(
        Region=REGION, Bucket=BUCKET, Path="/bench", SecretId=SECRET_ID, SecretKey=SECRET_KEY
    )
    storage = open_storage(settings.model_copy(update={"storage_dir": work / "stored"}), location)
    folder = work / f"take-{number}"
    folder.mkdir()
    stream = f"ttf{number}"
    publisher = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-readrate", f"{speed:g}", "-stream_loop", str(minutes - 1),
         "-i", str(clip), "-c", "copy", "-f", "flv", f"{server.rtmp_url}/{stream}"],
    )  # fmt: skip
    ended = [0.0]

    def watch_publisher() -> None:
        publisher.wait()
        ended[0] = time.monotonic()

    watcher = threading.Thread(target=watch_publisher, daemon=True)
    watcher.start()
    sampler = _DiskSampler(folder)
    finisher: LiveFinisher | None = None
    try:
        _on_air(server, stream)
        take = Take(anchor="a", started_at=datetime.now(UTC), stream_url=f"{server.rtmp_url}/{stream}")
        extension = EXTENSIONS[mode]
        destination = folder / f"{take.name}.{extension}"
        key = recording_key("/bench", "room", take.anchor, take.started_at, extension)
        if live:
            finisher = LiveFinisher.to_storage(
                folder, mode, lambda index: destination, lambda start: storage.open_live(key, folder)
            )
        record_take(take, folder, settings)
        watcher.join(timeout=60)
        lag = sum(p.stat().st_size for p in segment_files(folder)) - (finisher.consumed if finisher else 0)
        reports = finisher.finish() if finisher else None
        report = reports[0] if reports else None
        how = "live"
        if report is None:
            how = f"after the end ({finisher.failure})" if finisher else "after the end"
            report = transcode(segment_files(folder), mode, destination)
        url = report.stored_url or storage.store(report.path, key)
        httpx.post(
            receiver.url, json={"Files": [{"UserId": "a", "RecordFile": url, "Status": 1}]}, timeout=10
        )
        seconds = receiver.arrivals[-1] - ended[0]
        if cos is not None:
            size = len(cos.object(url.split(".myqcloud.com/")[1]) or b"")
        else:
            size = Path(unquote(urlparse(url).path)).stat().st_size
        return Row(minutes, mode, storage_name, live, seconds, lag / MB, sampler.stop() / MB, size / MB, how)
    finally:
        sampler.stop()
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait(timeout=10)
        if finisher is not None:
            finisher.abort()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / "stored", ignore_errors=True)
        if cos is not None:
            cos.clear()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 10, 60])
    parser.add_argument("--modes", nargs="+", default=["00", "01", "02"], choices=["00", "01", "02"])
    parser.add_argument("--storage", nargs="+", default=["local", "cos"], choices=["local", "cos"])
    parser.add_argument("--speed", type=float, default=50.0, help="publishing speed, x real time")
    parser.add_argument(
        "--mp3-speed", type=float, default=15.0, help="the same for Mode 00, whose encoding is slower"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the rows without live finishing")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="recorder-ttf-"))
    receiver = _Receiver()
    rows: list[Row] = []
    try:
        clip = work / "clip.flv"
        _make_clip(clip)
        with (
            NginxRtmp(work / "nginx") as server,
            CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as cos,
        ):
            number = 0
            for minutes in args.minutes:
                for storage in args.storage:
                    for mode in args.modes:
                        for live in [True] if args.no_reference else [True, False]:
                            number += 1
                            row = run_one(
                                server, clip, work, receiver, cos if storage == "cos" else None,
                                number, minutes, mode, storage, live,
                                args.mp3_speed if mode == "00" else args.speed,
                            )  # fmt: skip
                            rows.append(row)
                            print(
                                f"{row.minutes:>4} min  Mode {row.mode}  {row.storage:<5} "
                                f"{'live' if row.live else 'ref ':<4}  {row.seconds_to_file:7.2f} s  "
                                f"lag {row.lag_mb:6.1f} MB  disk {row.disk_mb:7.1f} MB  "
                                f"file {row.file_mb:7.1f} MB  {row.how}",
                                flush=True,
                            )
    finally:
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)
    _print_table(rows, args.speed, args.mp3_speed)


def _print_table(rows: list[Row], speed: float, mp3_speed: float) -> None:
    print(f"\nTime to file (stream end -> callback), fed at {speed:g}x real time (Mode 00 {mp3_speed:g}x)\n")
    print(f"{'min':>4} {'Mode':>4} {'storage':<7} {'live s':>7} {'after s':>8} {'ratio':>6} {'lag MB':>7} "
          f"{'disk MB':>8} {'file MB':>8}")  # fmt: skip
    keys = sorted({(r.minutes, r.storage, r.mode) for r in rows})
    for minutes, storage, mode in keys:
        live = [r for r in rows if (r.minutes, r.storage, r.mode, r.live) == (minutes, storage, mode, True)]
        after = [r for r in rows if (r.minutes, r.storage, r.mode, r.live) == (minutes, storage, mode, False)]
        live_s = statistics.median(r.seconds_to_file for r in live) if live else float("nan")
        after_s = statistics.median(r.seconds_to_file for r in after) if after else float("nan")
        first = (live or after)[0]
        print(
            f"{minutes:>4} {mode:>4} {storage:<7} {live_s:>7.2f} {after_s:>8.2f} {after_s / live_s:>6.1f} "
            f"{first.lag_mb:>7.1f} {first.disk_mb:>8.1f} {first.file_mb:>8.1f}"
        )
    longest = max(r.minutes for r in rows)
    worst = max((r.seconds_to_file for r in rows if r.live and r.minutes == longest), default=float("nan"))
    disk = max(
        (r.disk_mb for r in rows if r.live and r.minutes == longest and r.storage == "cos"), default=0.0
    )
    verdict = "met" if worst <= TARGET_SECONDS else "NOT met"
    print(f"\ntarget: callback <= {TARGET_SECONDS:g} s after the end of a {longest} min recording, "
          f"every Mode: worst {worst:.2f} s -> {verdict}")  # fmt: skip
    print(f"target: disk <= {TARGET_DISK_MB} MB for {longest} min to COS: {disk:.0f} MB -> "
          f"{'met' if disk <= TARGET_DISK_MB else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
