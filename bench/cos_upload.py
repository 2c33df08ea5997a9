"""Upload throughput to COS (the loopback COS-compatible endpoint), side by side with a
plain sequential put of the same bytes.

    python bench/cos_upload.py [--megabytes 200] [--runs 5]

Both sides go through cos-python-sdk-v5 and the same endpoint (its own process, so it does
not share this one's interpreter lock), which verifies every signature and computes CRC64
as COS does. "ours" is `CosStorage.store`: a look for an
existing object, the file's CRC64, parts sent `cos_upload_threads` at a time, and the
check against the CRC64 COS returns. "plain" is one `put_object` of the whole file,
streamed from disk, with no checks. Prints the median of `--runs` and the ratio ours/plain
(throughput: above 1 means ours is faster), on two links:

- loopback with no limit: what the endpoint's own work costs; there is no network to
  hide, so the extra passes (CRC64 here, assembling the parts there) show in full;
- a link that lets each connection upload at --link-mbps (20 MB/s by default), as a
  connection to COS over the internet is limited by its round trip: parallel parts are for
  this.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from qcloud_cos import CosConfig, CosS3Client  # type: ignore[import-untyped]

from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage.cos import CosStorage
from recorder.storage.credentials import resolve_credentials

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SECRET_ID, SECRET_KEY = "AKIDbench", "bench-key"
BUCKET, REGION = "bench-1250000000", "ap-guangzhou"


@contextlib.contextmanager
def _endpoint_process(link_mbps: float | None) -> Iterator[int]:
    """The loopback COS endpoint in a process of its own; yields its port."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "tests.cos_endpoint", "--port", str(port)]
    command += ["--secret-id", SECRET_ID, "--secret-key", SECRET_KEY, "--bucket", BUCKET, "--region", REGION]
    if link_mbps:
        command += ["--link-mbps", str(link_mbps)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and "COS endpoint" in server.stdout.readline()
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _seconds(action: Callable[[str], object], key: str) -> float:
    started = time.perf_counter()
    action(key)
    return time.perf_counter() - started


def _compare(source: Path, runs: int, link_mbps: float | None) -> tuple[float, float, RecorderSettings]:
    """Median seconds of a plain put and of ours, alternating so drift falls on both alike."""
    keys = {"SecretId": SECRET_ID, "SecretKey": SECRET_KEY}
    with _endpoint_process(link_mbps) as port:
        settings = RecorderSettings(storage="cos", cos_scheme="http", cos_ip=HOST, cos_port=port)
        location = CosLocation.model_validate({"Region": REGION, "Bucket": BUCKET, **keys})
        storage = CosStorage(location, resolve_credentials(location), settings)
        client = CosS3Client(CosConfig(Region=REGION, **keys, IP=HOST, Port=port, Scheme="http"))

        def plain(key: str) -> None:
            with source.open("rb") as body:
                client.put_object(Bucket=BUCKET, Body=body, Key=key)

        plain_times, our_times = [], []
        for run in range(runs):
            plain_times.append(_seconds(plain, f"plain/{run}.mp4"))
            our_times.append(_seconds(lambda key: storage.store(source, key), f"ours/{run}.mp4"))
            for key in (f"plain/{run}.mp4", f"ours/{run}.mp4"):  # keep the endpoint's memory flat
                client.delete_object(Bucket=BUCKET, Key=key)
    return statistics.median(plain_times), statistics.median(our_times), settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--link-mbps", type=float, default=20.0, help="per-connection MB/s of the slow link")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recorder-bench-cos-") as work:
        source = Path(work) / "recording.mp4"
        source.write_bytes(os.urandom(args.megabytes * 1024 * 1024))
        size_mb = source.stat().st_size / 1e6
        print(f"{size_mb:.0f} MB file, {args.runs} runs each, medians; the endpoint checks every signature")
        print("  ours: CosStorage.store (parts in parallel, CRC64 checked); plain: one put_object, no checks")
        print(f"  {'link':<34}{'plain s':>9}{'ours s':>9}{'plain MB/s':>12}{'ours MB/s':>11}{'ratio':>7}")
        for link in (None, args.link_mbps):
            plain_s, ours_s, settings = _compare(source, args.runs, link)
            name = "loopback, no limit" if link is None else f"{link:g} MB/s per connection"
            print(
                f"  {name:<34}{plain_s:>9.2f}{ours_s:>9.2f}{size_mb / plain_s:>12.0f}"
                f"{size_mb / ours_s:>11.0f}{plain_s / ours_s:>7.2f}"
            )
    parts = f"{settings.cos_part_size_mb} MiB parts, {settings.cos_upload_threads} at a time"
    print(f"  ratio = throughput ours/plain (above 1: ours is faster); {parts}")


if __name__ == "__main__":
    main()
