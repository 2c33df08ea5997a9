"""Recording many live streams at once: our one-process recorder against one ffmpeg per stream.

    python bench/concurrent_streams.py [--streams 10 50 100 200] [--seconds 60] [--runs 1]

What runs, for each N in --streams:

- Publishers (context, not measured as either side): N `ffmpeg -re -stream_loop -1 -i clip.flv
  -c copy -f flv rtmp://127.0.0.1:PORT/live/sK`, pushing a pre-encoded 16 s clip (720p25 H.264
  at 1.2 Mb/s, keyframe every 2 s, no B-frames, AAC 48 kHz stereo 64 kb/s) in real time into a
  real nginx-rtmp on loopback, run from deployments/nginx-rtmp.conf by tests/nginx_rtmp.py.
  They are started a few milliseconds apart, so their keyframes spread over the GOP as those of
  anchors joining a room do, and they keep running while both sides below record them.
- Ours: a child Python process (this script, with a hidden flag) running the production
  recording path, `recorder.recording.record_take`, for all N streams, one thread each
  (reconnect_seconds=0, 6 s MPEG-TS segments, flush per packet).
- Peer: N `ffmpeg -i rtmp://... -c copy -f segment` processes, with the same muxer options as
  ours (6 s MPEG-TS segments, a CSV list, flush per packet), so both sides do the same I/O and
  the difference is what our Python/PyAV layer costs. Note the ffmpeg command line is the
  system's (its FFmpeg version is printed), PyAV carries its own FFmpeg libraries.

The sides run one after the other on the same publishers (ours first; with --runs > 1 the
order alternates and the table shows medians). Each side is measured over a window of
--seconds that starts SETTLE_SECONDS after every one of its N streams is receiving, so
connecting, probing and the first segment are left out. Over the window we read, from /proc:

- CPU: utime + stime of the measured processes (all threads) from /proc/PID/stat, as % of one
  core per stream. 0.25 means one core records 400 streams.
- RSS: ours = (peak VmRSS in the window - VmRSS of the same child before any stream starts) / N,
  the memory a stream adds. ffmpeg = peak sum of every ffmpeg's VmRSS / N, each process whole,
  shared libraries counted in each; its PSS (shared pages split between processes, from
  smaps_rollup) is printed beside it as what the processes really take together.
- Lost packets: every recording is demuxed from start to stop and counted two ways; per
  recording the larger counts. Gaps: each step between consecutive DTS of a track of at least
  LOST_GAP_FRAMES frame intervals (video 40 ms, audio 1024/48000 s) counts the frames missing
  in it (the clip's loop point is a step of ~1.5 frames, its audio being 21 ms longer than its
  video: no loss). Count: the packets sent (71.9/s) from when the recording's first packet was
  on disk (polled every POLL_SECONDS) until the stop, less EDGE_SECONDS' worth, less the
  packets on disk. The count is needed: nginx-rtmp drops frames for a player that does not
  read fast enough and sends the next one with a timestamp relative to the last one sent, so
  the recording's clock just slows down and no gap shows. A recording that broke off early
  (notes) counts its missing tail; one that never started, everything since its side began.

Context printed per side, to tell whether a number is ours or the machine's: the whole
machine's busy % (2 cores: 100 % is both), the publishers' and nginx's CPU, what everything
else on the machine took ("other", e.g. someone else's job: it slows both sides), the frames nginx
dropped for slow players (its <dropped> counter: a recorder that cannot keep up loses packets
there), how far the publishers fell behind real time during the window (the growth of
`time - timestamp` of their nginx clients; a few hundred ms of jitter is normal), how long
the side took until its last recording received ("start s"), the frames missing in DTS gaps
("in gaps") and the recordings short by count ("short").

Reading the results: "ratio" is ours/ffmpeg CPU, so below 1 means we cost less than one
ffmpeg per stream. When the machine is near 100 % busy, both sides' CPU is inflated by the
contention (more context switches, colder caches) and lost packets may be the publishers' or
nginx's fault: look at the context table.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import httpx

from recorder.media.capture import CaptureReport, segment_files
from recorder.recording import record_take
from recorder.settings import RecorderSettings
from recorder.workspace import Take

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests/ is not an installed package
from tests.nginx_rtmp import NginxRtmp  # noqa: E402

CLIP_SECONDS = 16  # a multiple of 0.32 s: 400 video frames, 750 audio frames (+1 of AAC priming)
FPS = 25
SAMPLE_RATE = 48000
AAC_FRAME = 1024
SEGMENT_SECONDS = 6.0
READ_TIMEOUT = 10.0
PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "500000"}  # as capture() opens a stream
# Spread publishers' starts over one GOP (2 s), so their keyframes do not all come at once.
GOP_SECONDS = 2.0
SETTLE_SECONDS = 2.0
LOST_GAP_FRAMES = 1.75
EDGE_SECONDS = 1.0
POLL_SECONDS = 0.2
PROBE_NOISE = ("Missing reference picture", "decode_slice_header error", "no frame!")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024

# Bounds on every wait: none of these is reached when things work; they stop a hang.
PUBLISH_SECONDS = 60.0  # all publishers listed by nginx
RECEIVE_SECONDS = 60.0  # all recordings of one side receiving
CHILD_READY_SECONDS = 30.0
STOP_SECONDS = 20.0
STAT_TIMEOUT = 5.0

TARGET_CPU = 0.25  # % of a core per stream
TARGET_RATIO = 1.0
TARGET_RSS_MB = 30.0
TARGET_STREAMS = 200


# -- /proc ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces: the fields after it are split from its ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kb(pid: int, key: str, file: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _rss(pids: Sequence[int]) -> int:
    return sum(_status_kb(pid, "VmRSS") for pid in pids) * 1024


def _pss(pids: Sequence[int]) -> int:
    return sum(_status_kb(pid, "Pss", "smaps_rollup") for pid in pids) * 1024


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


# -- nginx's statistics page ----------------------------------------------------------------


@dataclass
class StatClients:
    """What nginx says of its clients: publishers' lag (ms) by stream, players' dropped frames."""

    publisher_lag: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    players: int = 0


def _stat(server: NginxRtmp) -> StatClients:
    found = StatClients()
    try:
        page = httpx.get(server.stat_url, timeout=STAT_TIMEOUT, trust_env=False).content
    except httpx.HTTPError:
        return found
    for stream in ET.fromstring(page).iter("stream"):
        name = stream.findtext("name", "")
        for client in stream.iter("client"):
            if client.find("publishing") is not None:
                # Connected for `time` ms, sent media up to `timestamp` ms: the difference grows
                # when a publisher cannot push in real time.
                found.publisher_lag[name] = int(client.findtext("time", "0")) - int(
                    client.findtext("timestamp", "0")
                )
            else:
                found.players += 1
                found.dropped += int(client.findtext("dropped", "0"))
    return found


# -- publishers ----------------------------------------------------------------------------


def _make_clip(clip: Path) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}:duration={CLIP_SECONDS}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}:duration={CLIP_SECONDS}",
         # RTC encoders send no B-frames; a keyframe every 2 s, as TRTC relays.
         "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-b:v", "1200k", "-maxrate", "1200k",
         "-bufsize", "2400k", "-g", str(FPS * 2), "-keyint_min", str(FPS * 2), "-sc_threshold", "0",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-b:a", "64k", str(clip)],
        check=True,
        timeout=300,
    )  # fmt: skip


class Publishers:
    """ffmpeg pushing the clip in a loop to live/s0 ... live/s{N-1}; grows and shrinks to N."""

    def __init__(self, server: NginxRtmp, clip: Path, logs: Path) -> None:
        self.server = server
        self.clip = clip
        self.logs = logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, index: int) -> str:
        return f"{self.server.rtmp_url}/s{index}"

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    def dead(self) -> list[int]:
        return [i for i, p in self.processes.items() if p.poll() is not None]

    def resize(self, count: int) -> None:
        for index in [i for i in self.processes if i >= count]:
            _stop_all([self.processes.pop(index)])
        missing = [i for i in range(count) if i not in self.processes]
        for index in missing:
            with (self.logs / f"publisher_{index}.log").open("ab") as log:
                self.processes[index] = subprocess.Popen(
                    ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
                     "-i", str(self.clip), "-c", "copy", "-f", "flv", self.url(index)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )  # fmt: skip
            time.sleep(GOP_SECONDS / len(missing))
        names = {f"s{i}" for i in range(count)}
        deadline = time.monotonic() + PUBLISH_SECONDS
        while time.monotonic() < deadline:
            if names <= set(_stat(self.server).publisher_lag):
                return
            time.sleep(0.2)
        listed = len(names & set(_stat(self.server).publisher_lag))
        raise RuntimeError(f"only {listed} of {count} publishers reached nginx in {PUBLISH_SECONDS:g} s")

    def stop(self) -> None:
        _stop_all(list(self.processes.values()))
        self.processes.clear()


def _stop_all(processes: Sequence[subprocess.Popen[bytes]] | Sequence[subprocess.Popen[str]]) -> None:
    """SIGTERM all (ffmpeg then closes its output properly), then wait; kill what is left."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)


# -- the measurement window ----------------------------------------------------------------


@dataclass
class Window:
    seconds: float
    cpu: float  # CPU seconds of the measured processes
    rss_peak: int  # bytes, the measured processes together
    pss: int  # bytes, at the end of the window
    machine_busy: float  # % of all cores
    publishers_cpu: float  # % of one core, all publishers together
    nginx_cpu: float  # % of one core
    other_cpu: float  # % of one core: everything else on the machine (another user, this script)
    nginx_dropped: int  # frames nginx dropped for this side's players during the window
    publisher_lag_growth_ms: int  # the most any publisher fell further behind


def _measure(
    seconds: float, pids: Callable[[], list[int]], publishers: Publishers, server: NginxRtmp, nginx: list[int]
) -> Window:
    measured = pids()
    others = publishers.pids()
    stat0 = _stat(server)
    busy0, total0 = _machine_ticks()
    cpu0 = sum(_cpu_seconds(p) for p in measured)
    pub0 = sum(_cpu_seconds(p) for p in others)
    nginx0 = sum(_cpu_seconds(p) for p in nginx)
    start = time.monotonic()
    rss_peak = 0
    # RSS sampled once a second; the parent's own sampling is a few ms of CPU per second.
    while (left := seconds - (time.monotonic() - start)) > 0:
        time.sleep(min(1.0, left))
        rss_peak = max(rss_peak, _rss(measured))
    cpu1 = sum(_cpu_seconds(p) for p in measured)
    elapsed = time.monotonic() - start
    pub1 = sum(_cpu_seconds(p) for p in others)
    nginx1 = sum(_cpu_seconds(p) for p in nginx)
    busy1, total1 = _machine_ticks()
    stat1 = _stat(server)
    pss = _pss(measured)
    cores = os.cpu_count() or 1
    machine = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
    publishers_cpu = 100.0 * (pub1 - pub0) / elapsed
    nginx_cpu = 100.0 * (nginx1 - nginx0) / elapsed
    measured_cpu = 100.0 * (cpu1 - cpu0) / elapsed
    lag0, lag1 = stat0.publisher_lag, stat1.publisher_lag
    growth = [lag1[name] - lag for name, lag in lag0.items() if name in lag1]
    return Window(
        seconds=elapsed,
        cpu=cpu1 - cpu0,
        rss_peak=rss_peak,
        pss=pss,
        machine_busy=machine,
        publishers_cpu=publishers_cpu,
        nginx_cpu=nginx_cpu,
        other_cpu=max(0.0, machine * cores - measured_cpu - publishers_cpu - nginx_cpu),
        nginx_dropped=stat1.dropped - stat0.dropped,
        publisher_lag_growth_ms=max(growth, default=0),
    )


# -- checking the recordings ---------------------------------------------------------------


@dataclass
class Check:
    packets: int = 0
    lost: int = 0  # per recording, the larger of the frames missing in gaps and by count
    in_gaps: int = 0  # frames missing between consecutive DTS
    short: int = 0  # recordings holding fewer packets than were sent (beyond EDGE_SECONDS)
    backwards: int = 0  # a DTS not after the one before (never expected)
    empty: int = 0  # recordings with no packet at all


NOMINAL = {"video": Fraction(1, FPS), "audio": Fraction(AAC_FRAME, SAMPLE_RATE)}
PACKETS_PER_SECOND = FPS + SAMPLE_RATE / AAC_FRAME


def _check(
    folders: Sequence[Path], first_seen: Sequence[float | None], began: float, stopped_at: float
) -> Check:
    """Count the packets missing from each recording two ways, and keep the larger.

    Gaps: frames missing between consecutive DTS of a track. Count: the packets the publisher
    sent from when the recording's first packet reached the disk until the stop, less those on
    disk. nginx-rtmp hides most of what it drops for a slow player: it sends the next frame
    with a timestamp relative to the last one that player got, so the recording's clock just
    runs slower and only the count sees it. A recording that never started lost all the
    packets sent since the side began.
    """
    check = Check()
    for folder, seen in zip(folders, first_seen, strict=True):
        last: dict[str, Fraction] = {}
        packets = in_gaps = 0
        for segment in segment_files(folder):
            try:
                with av.open(str(segment)) as container:
                    for packet in container.demux():
                        if packet.dts is None or packet.time_base is None:
                            continue
                        kind = packet.stream.type
                        dts = packet.dts * packet.time_base
                        packets += 1
                        if kind in last:
                            step = (dts - last[kind]) / NOMINAL[kind]
                            if step <= 0:
                                check.backwards += 1
                            elif step >= LOST_GAP_FRAMES:
                                in_gaps += round(step) - 1
                        last[kind] = dts
            except av.FFmpegError:
                # The last segment of a stopped ffmpeg may end mid-packet: what is there counts.
                continue
        # A stream first seen late (polled every POLL_SECONDS) or stopped a moment early is
        # no loss: EDGE_SECONDS of packets are allowed for.
        sent = (stopped_at - (began if seen is None else seen)) * PACKETS_PER_SECOND
        by_count = max(0, round(sent - packets - EDGE_SECONDS * PACKETS_PER_SECOND))
        check.packets += packets
        check.in_gaps += in_gaps
        check.lost += max(in_gaps, by_count)
        check.short += by_count > 0
        check.empty += packets == 0
    return check


def _first_packets(folders: Sequence[Path], alive: Callable[[], bool]) -> list[float | None]:
    """When each recording's first packet reached the disk (monotonic; None: not within
    RECEIVE_SECONDS). Both sides flush every packet, so a non-empty segment is a packet."""
    seen: list[float | None] = [None] * len(folders)
    deadline = time.monotonic() + RECEIVE_SECONDS
    while None in seen and time.monotonic() < deadline and alive():
        for index, folder in enumerate(folders):
            if seen[index] is None and any(s.stat().st_size > 0 for s in segment_files(folder)):
                seen[index] = time.monotonic()
        time.sleep(POLL_SECONDS)
    return seen


# -- the two sides -------------------------------------------------------------------------


@dataclass
class Side:
    window: Window
    check: Check
    receiving: int  # recordings with a packet on disk when the window began
    start_seconds: float  # from starting the recordings until the last one received
    rss_base: int = 0  # ours: the child's RSS before any stream started
    notes: list[str] = field(default_factory=list)


class _Lines:
    """A child's stdout lines, read by a thread so that every wait for one is bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.strip())
        self._queue.put("")  # EOF

    def expect(self, prefix: str, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            if line == "":
                raise RuntimeError(f"the recorder child ended before saying {prefix!r}")
        raise RuntimeError(f"the recorder child did not say {prefix!r} within {seconds:g} s")


def run_ours(
    count: int, seconds: float, work: Path, publishers: Publishers, server: NginxRtmp, nginx: list[int]
) -> Side:
    folder = work / "ours"
    folder.mkdir()
    folders = [folder / f"s{i}" for i in range(count)]
    (folder / "urls.txt").write_text("\n".join(publishers.url(i) for i in range(count)))
    with (work / "ours.log").open("a") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert child.stdin is not None and child.stdout is not None
        lines = _Lines(child.stdout)
        lines.expect("ready", CHILD_READY_SECONDS)
        rss_base = _rss([child.pid])  # imports done, no stream yet
        began = time.monotonic()
        child.stdin.write("go\n")
        child.stdin.flush()
        first_seen = _first_packets(folders, lambda: child.poll() is None)
        receiving = _started(first_seen, began)
        time.sleep(SETTLE_SECONDS)
        window = _measure(seconds, lambda: [child.pid], publishers, server, nginx)
        stopped_at = time.monotonic()
        child.stdin.write("stop\n")
        child.stdin.flush()
        outcomes: list[str] = json.loads(lines.expect("done", STOP_SECONDS + 5))
        child.wait(timeout=STOP_SECONDS)
    finally:
        _stop_all([child])
    notes = [f"{n} x {why!r}" for why, n in _tally(outcomes).items() if why != "stopped"]
    return Side(window, _check(folders, first_seen, began, stopped_at), *receiving, rss_base, notes)


def _peer_command(url: str, out: Path) -> list[str]:
    """ffmpeg recording `url` as ours does: same probing, same segments, same flushing."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
        "-analyzeduration", PROBE_OPTIONS["analyzeduration"], "-probesize", PROBE_OPTIONS["probesize"],
        "-i", url, "-c", "copy",
        "-f", "segment", "-segment_time", f"{SEGMENT_SECONDS:g}", "-segment_format", "mpegts",
        "-segment_list", str(out / "segments.csv"), "-segment_list_type", "csv",
        "-segment_list_flags", "live", "-segment_format_options", "flush_packets=1",
        str(out / "seg_%05d.ts"),
    ]  # fmt: skip


def run_ffmpeg(
    count: int, seconds: float, work: Path, publishers: Publishers, server: NginxRtmp, nginx: list[int]
) -> Side:
    folder = work / "ffmpeg"
    folders = [folder / f"s{i}" for i in range(count)]
    processes: list[subprocess.Popen[bytes]] = []
    began = time.monotonic()
    try:
        for index, out in enumerate(folders):
            out.mkdir(parents=True)
            with (out / "ffmpeg.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        _peer_command(publishers.url(index), out),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        first_seen = _first_packets(folders, lambda: any(p.poll() is None for p in processes))
        receiving = _started(first_seen, began)
        time.sleep(SETTLE_SECONDS)
        window = _measure(seconds, lambda: [p.pid for p in processes], publishers, server, nginx)
        stopped_at = time.monotonic()
    finally:
        _stop_all(processes)
    exited_early = sum(1 for p in processes if p.returncode not in (0, 255, -signal.SIGTERM))
    errors = [
        line
        for out in folders
        for line in (out / "ffmpeg.log").read_text().splitlines()
        # Probing decodes a few frames; joined between keyframes (wait_key off), the first do not.
        if line and not any(said in line for said in PROBE_NOISE)
    ]
    notes = [f"{exited_early} ffmpeg exited on their own"] if exited_early else []
    notes += [f"ffmpeg said: {line}" for line in sorted(set(errors))[:5]]
    return Side(window, _check(folders, first_seen, began, stopped_at), *receiving, 0, notes)


def _started(first_seen: Sequence[float | None], began: float) -> tuple[int, float]:
    """How many recordings received, and how long until the last of them did."""
    seen = [t for t in first_seen if t is not None]
    return len(seen), max(seen, default=began) - began


def _tally(items: Sequence[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for item in items:
        counted[item] = counted.get(item, 0) + 1
    return counted


def child(folder: Path) -> None:
    """Ours, in its own process: record every URL of urls.txt with record_take, one thread each.

    Says `ready` once imported, starts on `go`, stops on `stop` (or when its parent's pipe
    closes) and says `done [why each recording ended]`. The parent sees the recordings start
    on disk, as it does ffmpeg's: this process has enough threads waiting for the GIL already.
    """
    urls = (folder / "urls.txt").read_text().split()
    settings = RecorderSettings(
        segment_seconds=SEGMENT_SECONDS, read_timeout_seconds=READ_TIMEOUT, reconnect_seconds=0
    )
    stop = threading.Event()
    outcomes = ["did not end"] * len(urls)
    progressed = [0.0] * len(urls)

    def record(index: int, url: str) -> None:
        take = Take(anchor=f"s{index}", started_at=datetime.now(UTC), stream_url=url)

        def progress(report: CaptureReport) -> None:
            # Once a second per stream, as tasks/record.py's (which logs every minute).
            progressed[index] = report.seconds

        try:
            outcomes[index] = record_take(
                take, folder / f"s{index}", settings, should_stop=stop.is_set, on_progress=progress
            ).ended_because
        except Exception as exc:  # one failed stream is reported, not the end of the benchmark
            outcomes[index] = f"failed: {exc}"

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    threads = [threading.Thread(target=record, args=(i, u), daemon=True) for i, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    sys.stdin.readline()  # "stop", or "" when the parent is gone
    stop.set()
    deadline = time.monotonic() + STOP_SECONDS
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic()))
    print(f"done {json.dumps(outcomes)}", flush=True)


# -- the report ----------------------------------------------------------------------------


def _per_stream_cpu(side: Side, count: int) -> float:
    return 100.0 * side.window.cpu / side.window.seconds / count


def _ours_rss(side: Side, count: int) -> float:
    return (side.window.rss_peak - side.rss_base) / count / MB


def _print_results(results: dict[int, list[tuple[Side, Side]]], seconds: float, runs: int) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"\n{seconds:g} s window per side; median of {runs} run(s)\n")
    header = (
        f"{'N':>4} {'ours %core/str':>14} {'ffmpeg %core/str':>16} {'ours/ffmpeg':>11} "
        f"{'ours RSS MB/str':>15} {'ffmpeg RSS MB/str':>17} {'ffmpeg PSS MB/str':>17} "
        f"{'lost ours/ffmpeg':>16}"
    )
    print(header)
    summary: dict[int, tuple[float, float, float, int, int]] = {}
    for count, pairs in results.items():
        ours_cpu = median([_per_stream_cpu(o, count) for o, _ in pairs])
        peer_cpu = median([_per_stream_cpu(f, count) for _, f in pairs])
        ratio = median([_per_stream_cpu(o, count) / max(1e-9, _per_stream_cpu(f, count)) for o, f in pairs])
        ours_rss = median([_ours_rss(o, count) for o, _ in pairs])
        peer_rss = median([f.window.rss_peak / count / MB for _, f in pairs])
        peer_pss = median([f.window.pss / count / MB for _, f in pairs])
        # Losses are not medians: any run that lost a packet shows.
        ours_lost = max(o.check.lost for o, _ in pairs)
        peer_lost = max(f.check.lost for _, f in pairs)
        summary[count] = (ours_cpu, ratio, ours_rss, ours_lost, len(pairs))
        print(
            f"{count:>4} {ours_cpu:>14.3f} {peer_cpu:>16.3f} {ratio:>11.2f} "
            f"{ours_rss:>15.2f} {peer_rss:>17.2f} {peer_pss:>17.2f} {f'{ours_lost}/{peer_lost}':>16}"
        )

    print("\nContext per run (machine: 2 cores, busy % of both; publishers and nginx in % of one core)")
    print(
        f"{'N':>4} {'side':<6} {'receiving':>9} {'window s':>8} {'busy %':>6} {'pub %':>6} {'nginx %':>7} "
        f"{'other %':>7} {'nginx dropped':>13} {'pub lag +ms':>11} {'packets':>9} {'start s':>7} "
        f"{'in gaps':>7} {'short':>5} {'backwards':>9}  notes"
    )
    for count, pairs in results.items():
        for pair in pairs:
            for name, side in zip(("ours", "ffmpeg"), pair, strict=True):
                w = side.window
                print(
                    f"{count:>4} {name:<6} {side.receiving:>9} {w.seconds:>8.1f} {w.machine_busy:>6.1f} "
                    f"{w.publishers_cpu:>6.1f} {w.nginx_cpu:>7.1f} {w.other_cpu:>7.1f} {w.nginx_dropped:>13} "
                    f"{w.publisher_lag_growth_ms:>11} {side.check.packets:>9} {side.start_seconds:>7.1f} "
                    f"{side.check.in_gaps:>7} {side.check.short:>5} {side.check.backwards:>9}  "
                    f"{'; '.join(side.notes)}"
                )

    print("\nTargets")
    for count, (cpu, ratio, rss, lost, _) in summary.items():
        verdicts = [
            f"cpu {cpu:.3f} {'<=' if cpu <= TARGET_CPU else '>'} {TARGET_CPU} %core/stream",
            f"ratio {ratio:.2f} {'<=' if ratio <= TARGET_RATIO else '>'} {TARGET_RATIO:g}x ffmpeg",
            f"rss {rss:.1f} {'<=' if rss <= TARGET_RSS_MB else '>'} {TARGET_RSS_MB:g} MB/stream",
            f"lost {lost}",
        ]
        print(f"  N={count:<4} " + ", ".join(verdicts))
    if TARGET_STREAMS in summary:
        met = "met" if summary[TARGET_STREAMS][3] == 0 else "NOT met"
        print(f"  {TARGET_STREAMS} streams without a lost packet: {met}")
    else:
        print(f"  {TARGET_STREAMS} streams without a lost packet: not run (largest N: {max(summary)})")


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[10, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # ours, in its own process
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return

    work = Path(tempfile.mkdtemp(prefix="recorder-streams-"))
    server = NginxRtmp(work / "nginx")
    publishers: Publishers | None = None
    results: dict[int, list[tuple[Side, Side]]] = {}
    try:
        clip = work / "clip.flv"
        _make_clip(clip)
        server.start()
        master = int((server.dir / "nginx.pid").read_text())
        nginx = [master, *_children_of(master)]
        logs = work / "logs"
        logs.mkdir()
        publishers = Publishers(server, clip, logs)
        version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10)
        print(f"ffmpeg command: {version.stdout.splitlines()[0]}")
        print(f"PyAV {av.__version__} with FFmpeg {av.ffmpeg_version_info}; Python {sys.version.split()[0]}")
        print(f"{os.cpu_count()} cores; work folder {work}", flush=True)
        for count in sorted(args.streams):
            publishers.resize(count)
            print(f"N={count}: {count} publishers on nginx", flush=True)
            for run in range(args.runs):
                # Alternate the order, so a drift of the machine over time does not favour one side.
                sides: dict[str, Side] = {}
                order = ("ours", "ffmpeg") if run % 2 == 0 else ("ffmpeg", "ours")
                for name in order:
                    runner = run_ours if name == "ours" else run_ffmpeg
                    try:
                        sides[name] = runner(count, args.seconds, work, publishers, server, nginx)
                    except RuntimeError as exc:
                        # One side that cannot run at this N (its child hung) costs this run only.
                        print(f"  run {run + 1} {name}: failed: {exc}", flush=True)
                        continue
                    finally:
                        shutil.rmtree(work / name, ignore_errors=True)
                    side = sides[name]
                    print(
                        f"  run {run + 1} {name}: {_per_stream_cpu(side, count):.3f} %core/stream, "
                        f"lost {side.check.lost}, machine {side.window.machine_busy:.0f} % busy",
                        flush=True,
                    )
                if dead := publishers.dead():
                    print(f"  {len(dead)} publishers died: {publishers.logs}", flush=True)
                if len(sides) == len(order):
                    results.setdefault(count, []).append((sides["ours"], sides["ffmpeg"]))
    finally:
        if publishers is not None:
            publishers.stop()
        server.stop()
        if results:
            _print_results(results, args.seconds, args.runs)
        shutil.rmtree(work, ignore_errors=True)  # the clip and any recording left behind


if __name__ == "__main__":
    main()
