"""Hostile or broken media through the real capture and transcode (issue 6).

Each input is made for real (ffmpeg encodes it, or it is random bytes), served as a live
stream by an HTTP server on loopback, recorded by `record_take` and converted for each Mode
by `transcode`, in a child process as a worker runs them: a step's exception becomes Status
0 and a Message as the flow makes it, and the child's exit status shows it never crashed.
Every case must end within a bounded time with either a file that plays to the end, whose
timestamps only increase (checked with ffprobe and a PyAV decode), or Status 0 saying why.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from tests.loopback_server import LoopbackHTTPServer
from tests.media_check import decode_to_end, ffprobe

ROOT = Path(__file__).resolve().parents[1]
READ_TIMEOUT = 2.0  # the recorder's read timeout in these runs: how long silence lasts
# A run takes a few seconds (about one more with a read timeout); this only stops a hang.
BUDGET_SECONDS = 25.0
SECONDS = 2.0  # the length of each piece of test media
MODES = ("00", "01", "02")
CHUNK = 64 * 1024
HOLD_SECONDS = 60.0  # how long a held-open stream waits for the server to stop, at most
FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]


# -- the media ---------------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run([*FFMPEG, *args], check=True, timeout=60, capture_output=True)


def _encode(
    out: Path, *, video: str | None = "320x240", audio: bool = True, codecs: Sequence[str] = ()
) -> Path:
    """`SECONDS` of a test pattern and/or a tone; H.264/AAC unless `codecs` says otherwise."""
    args: list[str] = []
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={video}:rate=25"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-t", f"{SECONDS:g}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-ac", "1"]
    _ffmpeg(*args, *codecs, str(out))
    return out


def _flv_tags(data: bytes) -> list[bytes]:
    """An FLV file's tags, each with the PreviousTagSize after it."""
    offset = int.from_bytes(data[5:9], "big") + 4  # the header, then PreviousTagSize0
    tags = []
    while offset + 11 <= len(data):
        end = offset + 11 + int.from_bytes(data[offset + 1 : offset + 4], "big") + 4
        tags.append(data[offset:end])
        offset = end
    return tags


def _garbage(seed: int, size: int = 300_000) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every input, as the bytes a server sends."""
    folder = tmp_path_factory.mktemp("media")
    av_ts = _encode(folder / "av.ts")
    _ffmpeg("-i", str(av_ts), "-c", "copy", str(folder / "av.flv"))
    # The same picture size throughout is not a given: 320x180, then 640x360, in one stream.
    small = _encode(folder / "small.ts", video="320x180")
    large = _encode(folder / "large.ts", video="640x360")
    (folder / "list.txt").write_text(f"file '{small}'\nfile '{large}'\n")
    joining = ["-f", "concat", "-safe", "0", "-i", str(folder / "list.txt"), "-c", "copy"]
    for ext in ("ts", "flv"):
        _ffmpeg(*joining, str(folder / f"res.{ext}"))
    # The second half of "garbage in the middle" goes on where the first ended.
    _ffmpeg("-i", str(av_ts), "-c", "copy", "-output_ts_offset", f"{SECONDS:g}", str(folder / "later.ts"))
    # Over FLV, as relays send. (Read over HTTP, an audio-only MPEG-TS loses about 0.3 s
    # after its first packet in PyAV's FFmpeg 8.1, not in FFmpeg 5.1's ffprobe: not ours.)
    _encode(folder / "video.flv", audio=False)
    _encode(folder / "audio.flv", video=None)
    _encode(folder / "mpeg2.ts", codecs=["-c:v", "mpeg2video", "-c:a", "mp2"])
    # FLV carries codecs MPEG-TS cannot: PCM, and Flash's own Sorenson H.263 and Nellymoser.
    _encode(folder / "pcm.flv", codecs=["-c:a", "pcm_s16le"])
    _encode(folder / "flash.flv", codecs=["-c:v", "flv1", "-c:a", "nellymoser"])
    data = {path.name: path.read_bytes() for path in folder.iterdir() if path.suffix in (".ts", ".flv")}
    # A publisher whose clock starts over: two recordings each starting at zero, joined. In
    # MPEG-TS, byte for byte; in FLV, the second one's tags after the first one's (its own
    # header and metadata left out, as a stream does when the encoder restarts behind a relay).
    data["restart.ts"] = data["av.ts"] * 2
    restarted = [tag for tag in _flv_tags(data["av.flv"]) if tag[0] != 18]  # 18: script data
    data["restart.flv"] = data["av.flv"] + b"".join(restarted)
    return data


# -- a live stream on loopback -----------------------------------------------------------


class _StreamServer(LoopbackHTTPServer):
    body = b""
    hold = False


class _StreamHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 chunked, as live HTTP-FLV servers send: the end of the body is a clean end of
    # stream to FFmpeg (a closed HTTP/1.0 connection reads as a premature end, EIO).
    protocol_version = "HTTP/1.1"
    server: _StreamServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        body = self.server.body
        for start in range(0, len(body), CHUNK):
            chunk = body[start : start + CHUNK]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.flush()
        if self.server.hold:
            # The connection stays open and says nothing more: only a read timeout ends it.
            self.server.stopping.wait(HOLD_SECONDS)
            return
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Serving:
    """`body` as a live stream at `url` for the length of a `with` block."""

    def __init__(self, body: bytes, ext: str, *, hold: bool = False) -> None:
        self._server = _StreamServer(("127.0.0.1", 0), _StreamHandler)
        self._server.body, self._server.hold = body, hold
        self.url = f"http://127.0.0.1:{self._server.server_port}/live/anchor.{ext}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Serving:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.close_connections()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start servers of bodies; all stopped at the end of the test."""
    running: list[Serving] = []

    def start(body: bytes, ext: str, *, hold: bool = False) -> str:
        running.append(Serving(body, ext, hold=hold).__enter__())
        return running[-1].url

    yield start
    for serving in running:
        serving.__exit__()


# -- the pipeline, in a child process as in a worker -------------------------------------


def child_main() -> None:
    """Record each URL in turn into one folder (as a retried record task does), then
    convert for each Mode; print each Mode's Files entry as JSON."""
    from recorder.media.capture import segment_files
    from recorder.media.transcode import EXTENSIONS, TranscodeReport, transcode
    from recorder.outcome import StepFailure, file_entry
    from recorder.recording import Recording, record_take
    from recorder.settings import RecorderSettings
    from recorder.workspace import Take

    urls, folder, modes = sys.argv[1].split(","), Path(sys.argv[2]), sys.argv[3].split(",")
    # No waiting for a stream to come back: each input here ends for good.
    settings = RecorderSettings(segment_seconds=1.0, read_timeout_seconds=READ_TIMEOUT, reconnect_seconds=0)
    take = Take(anchor="anchor", started_at=datetime.now(UTC), stream_url=urls[0])
    recorded: Recording | StepFailure | None = None
    for url in urls:
        try:
            recorded = record_take(take.model_copy(update={"stream_url": url}), folder, settings)
        except Exception as exc:  # what Prefect does with any exception of a task
            recorded = StepFailure(str(exc))
    entries = {}
    for mode in modes:
        converted: TranscodeReport | StepFailure | None = None
        stored = None
        if isinstance(recorded, Recording):
            destination = folder / f"{take.name}_{mode}.{EXTENSIONS[mode]}"
            try:
                converted = transcode(segment_files(folder), mode, destination)
                stored = destination.as_uri()
            except Exception as exc:
                converted = StepFailure(str(exc))
        entries[mode] = file_entry(take.anchor, recorded, converted, stored).model_dump()
    print(json.dumps(entries))


@dataclass
class Run:
    entries: dict[str, dict[str, Any]]
    seconds: float
    folder: Path

    def file(self, mode: str) -> Path:
        entry = self.entries[mode]
        assert entry["Status"] == 1, entry
        return Path(unquote(urlparse(entry["RecordFile"]).path))

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob("seg_*.ts"))


CHILD = "from tests.test_fault_media import child_main; child_main()"


def run_pipeline(urls: Sequence[str], folder: Path, modes: Sequence[str] = MODES) -> Run:
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(urls), str(folder), ",".join(modes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUDGET_SECONDS,
    )
    seconds = time.monotonic() - started
    # A negative status is a signal: a segfault or an abort in FFmpeg would show here.
    assert child.returncode == 0, f"the worker died ({child.returncode}): {child.stderr[-3000:]}"
    print(f"{urls[0].rsplit('/', 1)[-1]}: {seconds:.1f} s")
    return Run(json.loads(child.stdout.strip().splitlines()[-1]), seconds, folder)


# -- independent checks ------------------------------------------------------------------


def _probe_json(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def dts_steps(source: str) -> dict[int, list[float]]:
    """Per stream, the steps in seconds between each packet's DTS and the next (ffprobe's reading)."""
    packets = _probe_json("-show_entries", "packet=stream_index,dts_time", source)["packets"]
    last: dict[int, float] = {}
    steps: dict[int, list[float]] = {}
    for packet in packets:
        if "dts_time" not in packet:
            continue
        index, dts = packet["stream_index"], float(packet["dts_time"])
        if index in last:
            steps.setdefault(index, []).append(dts - last[index])
        last[index] = dts
    return steps


def dts_only_increase(source: str) -> bool:
    steps = dts_steps(source)
    return bool(steps) and all(step > 0 for each in steps.values() for step in each)


def joined(segments: list[Path]) -> str:
    """The segments as one stream, joined by FFmpeg's concat protocol (not our reader)."""
    return "concat:" + "|".join(str(s) for s in segments)


def frame_sizes(path: Path) -> set[tuple[int, int]]:
    frames = _probe_json("-select_streams", "v", "-show_entries", "frame=width,height", str(path))["frames"]
    return {(f["width"], f["height"]) for f in frames if "width" in f}


def assert_plays(path: Path, kinds: set[str], seconds: float) -> dict[str, float]:
    """`path` has just these kinds of stream, decodes to `seconds` and its DTS only increase."""
    probe = ffprobe(path)
    assert set(probe.streams) == kinds, probe.streams
    reached = decode_to_end(path)
    assert set(reached) == kinds
    for kind in kinds:
        assert reached[kind] == pytest.approx(seconds, abs=0.15), (kind, reached)
    assert dts_only_increase(str(path)), path
    return reached


def assert_converted(run: Run, seconds: float, *, video: bool = True, audio: bool = True) -> None:
    """Every Mode's file plays `seconds` of what it should hold."""
    if audio:
        assert_plays(run.file("00"), {"audio"}, seconds)
    if video:
        assert_plays(run.file("01"), {"video"}, seconds)
    both = {kind for kind, present in (("video", video), ("audio", audio)) if present}
    reached = assert_plays(run.file("02"), both, seconds)
    if video and audio:
        assert reached["video"] == pytest.approx(reached["audio"], abs=0.15)  # still in sync


# -- the cases ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ext", ["ts", "flv"])
@pytest.mark.parametrize("hold", [False, True], ids=["then-eof", "then-silence"])
def test_garbage_is_refused_with_a_clear_message(serve: Any, tmp_path: Path, ext: str, hold: bool) -> None:
    url = serve(_garbage(6), ext, hold=hold)
    run = run_pipeline([url], tmp_path / "take")
    if hold:
        # Short of the probe size, the reader waits for more: its read timeout ends the wait.
        reason = f"no audio or video within {READ_TIMEOUT:g} s"
        assert run.seconds >= READ_TIMEOUT
    else:
        reason = "Invalid data found when processing input"
    for mode in MODES:
        assert run.entries[mode] == {
            "UserId": "anchor",
            "RecordFile": "",
            "Status": 0,
            "Message": f"recording failed: cannot open the stream: {reason}",
        }
    assert run.segments() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ext", ["ts", "flv"])
@pytest.mark.parametrize("hold", [False, True], ids=["then-eof", "then-silence"])
def test_garbage_after_a_valid_start_keeps_the_valid_part(
    media: dict[str, bytes], serve: Any, tmp_path: Path, ext: str, hold: bool
) -> None:
    url = serve(media[f"av.{ext}"] + _garbage(7), ext, hold=hold)
    run = run_pipeline([url], tmp_path / "take")
    assert_converted(run, SECONDS)
    message = run.entries["02"]["Message"]
    assert message.startswith(f"ok: {SECONDS:.1f} s, video:h264 (copied), audio:aac (copied); "), message


@pytest.mark.timeout(120)
def test_garbage_in_the_middle_of_mpeg_ts_is_skipped(
    media: dict[str, bytes], serve: Any, tmp_path: Path
) -> None:
    # MPEG-TS finds its 188-byte packets again after the garbage: both halves are kept.
    url = serve(media["av.ts"] + _garbage(8, 100_000) + media["later.ts"], "ts")
    run = run_pipeline([url], tmp_path / "take")
    assert_converted(run, 2 * SECONDS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ext", ["ts", "flv"])
def test_a_resolution_change_mid_stream_plays_to_the_end(
    media: dict[str, bytes], serve: Any, tmp_path: Path, ext: str
) -> None:
    url = serve(media[f"res.{ext}"], ext)
    run = run_pipeline([url], tmp_path / "take")
    assert_converted(run, 2 * SECONDS)
    for mode in ("01", "02"):
        # Copied as it came: the decoder follows the new size from the stream's own headers.
        assert frame_sizes(run.file(mode)) == {(320, 180), (640, 360)}


@pytest.mark.timeout(120)
def test_video_only_fails_mode_00_clearly_and_makes_a_video_only_mp4(
    media: dict[str, bytes], serve: Any, tmp_path: Path
) -> None:
    run = run_pipeline([serve(media["video.flv"], "flv")], tmp_path / "take")
    entry = run.entries["00"]
    assert (entry["Status"], entry["RecordFile"]) == (0, "")
    assert entry["Message"].startswith(
        "transcoding failed: Mode 00 (audio) needs audio but the anchor published video (media kept in "
    )
    assert_plays(run.file("01"), {"video"}, SECONDS)
    assert_plays(run.file("02"), {"video"}, SECONDS)
    assert run.entries["02"]["Message"].endswith("; the anchor published no audio")


@pytest.mark.timeout(120)
def test_audio_only_fails_mode_01_clearly_and_makes_an_audio_only_mp4(
    media: dict[str, bytes], serve: Any, tmp_path: Path
) -> None:
    run = run_pipeline([serve(media["audio.flv"], "flv")], tmp_path / "take")
    entry = run.entries["01"]
    assert (entry["Status"], entry["RecordFile"]) == (0, "")
    assert entry["Message"].startswith(
        "transcoding failed: Mode 01 (video) needs video but the anchor published audio (media kept in "
    )
    assert_plays(run.file("00"), {"audio"}, SECONDS)
    path = run.file("02")
    assert_plays(path, {"audio"}, SECONDS)
    assert ffprobe(path).format_name.startswith("mov,mp4")
    assert run.entries["02"]["Message"].endswith("; the anchor published no video")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "recorded", "converted"),
    [
        # MPEG-TS takes MPEG-2 and MP2 as they are; the MP4 gets them encoded.
        ("mpeg2.ts", ("mpeg2video", "mp2"), "video:mpeg2video (encoded to h264), audio:mp2 (encoded to aac)"),
        # MPEG-TS cannot take PCM: the recording encodes it to AAC, which the MP4 copies.
        ("pcm.flv", ("h264", "aac"), "video:h264 (copied), audio:aac (copied)"),
        ("flash.flv", ("h264", "aac"), "video:h264 (copied), audio:aac (copied)"),
    ],
    ids=["mpeg2-mp2-in-ts", "h264-pcm-in-flv", "sorenson-nellymoser-in-flv"],
)
def test_codecs_the_containers_cannot_carry_are_encoded(
    media: dict[str, bytes],
    serve: Any,
    tmp_path: Path,
    name: str,
    recorded: tuple[str, str],
    converted: str,
) -> None:
    url = serve(media[name], name.rsplit(".", 1)[1])
    run = run_pipeline([url], tmp_path / "take")
    for segment in run.segments():
        probe = ffprobe(segment)  # both streams readable in every piece, none left as data
        assert (probe.codec("video"), probe.codec("audio")) == recorded
    assert_converted(run, SECONDS)
    assert run.entries["02"]["Message"].startswith(f"ok: {SECONDS:.1f} s, {converted}; ")
    probe = ffprobe(run.file("02"))
    assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
    assert ffprobe(run.file("00")).codec("audio") == "mp3"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ext", ["ts", "flv"])
def test_timestamps_that_jump_back_are_moved_on(
    media: dict[str, bytes], serve: Any, tmp_path: Path, ext: str
) -> None:
    body = media[f"restart.{ext}"]
    run = run_pipeline([serve(body, ext)], tmp_path / "take")
    # The recording itself goes on past the jump (a muxer refuses a DTS that goes back: the
    # recording used to end there), and its timestamps only increase...
    assert dts_only_increase(joined(run.segments()))
    # ...so every Mode has both halves, in sync, the second right after the first.
    assert_converted(run, 2 * SECONDS)
    for steps in dts_steps(str(run.file("02"))).values():
        assert max(steps) < 0.1  # a frame is 40 ms, an AAC frame 23 ms: no hole at the jump


@pytest.mark.timeout(120)
def test_a_retried_recording_whose_source_clock_restarted_converts_whole(
    media: dict[str, bytes], serve: Any, tmp_path: Path
) -> None:
    # A retried record task appends the second pull's segments to the first one's; the
    # source started its clock over in between, so the joined segments go back in time.
    urls = [serve(media["av.ts"], "ts"), serve(media["av.ts"], "ts")]
    run = run_pipeline(urls, tmp_path / "take")
    assert not dts_only_increase(joined(run.segments()))  # the input really jumps back
    assert_converted(run, 2 * SECONDS)
