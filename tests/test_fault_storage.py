"""Storage faults, done for real (issue 6): COS gone for a minute in the middle of an upload,
COS gone for good and a later retry of the run, and the work folder filling up while a
stream is being recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import av
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH
from prefect.tasks import exponential_backoff

from flows.record_room import record_room, run_request
from recorder.media.capture import segment_files
from recorder.media.segment_reader import SegmentReader
from recorder.recording import Recording
from recorder.request import parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.sealing import new_service_key, public_parameters, seal_secrets
from recorder.settings import RecorderSettings
from recorder.storage.cos import WRITE_CHECK_NAME
from recorder.storage.integrity import file_crc64
from tests.cos_endpoint import CRC64, CosEndpoint, Seen
from tests.http_receiver import Receiver
from tests.media_check import decode_to_end
from tests.prefect_records import assert_secrets_absent, task_run_states

REPO_ROOT = Path(__file__).resolve().parent.parent
BUCKET = "faults-1250000000"
REGION = "ap-chengdu"
SECRET_ID = "AKIDfaulttest"
SECRET_KEY = "fault-key-NEVER-STORE-5e1a"
USER_SIG = "sig-NEVER-STORE-93c4"
OUTAGE_SECONDS = 60.0


@pytest.fixture
def cos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Iterator[CosEndpoint]:
    with CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as running:
        monkeypatch.delenv("CFS_PATH", raising=False)
        for name in ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN"):
            monkeypatch.delenv(name, raising=False)
        settings = {
            "WORK_DIR": str(tmp_path / "work"),
            "STORAGE_DIR": str(tmp_path / "never-used"),
            "POLL_SECONDS": "0.2",
            # An anchor's file ends with their stream, not 15 s later in case it comes back.
            "RECONNECT_SECONDS": "0",
            "STORAGE": "cos",
            "COS_SCHEME": "http",
            "COS_IP": running.host,
            "COS_PORT": str(running.port),
            "COS_TIMEOUT_SECONDS": "5",
            # One quick try again per request (1 s apart): the outage is the upload step's to
            # wait out, with its whole-file attempts.
            "COS_REQUEST_RETRIES": "1",
        }
        for name, value in settings.items():
            monkeypatch.setenv(f"RECORDER_{name}", value)
        yield running


def _request(callback: str | None = None, **changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "SdkAppId": 1400000000,
        "RoomId": 3001,
        "UserId": "recorder_1",
        "UserSig": USER_SIG,
        "CosConfig": {
            "Region": REGION,
            "Bucket": BUCKET,
            "Path": "/faults",
            "SecretId": SECRET_ID,
            "SecretKey": SECRET_KEY,
        },
        "Mode": "02",
        "MaxIdleTime": 1,
    }
    if callback:
        request["Callback"] = callback
    return request | changes


def _key(url: str) -> str:
    parsed = urlparse(url)
    assert parsed.netloc == f"{BUCKET}.cos.{REGION}.myqcloud.com", url
    return unquote(parsed.path).lstrip("/")


@contextmanager
def _when_seen(
    endpoint: CosEndpoint, wanted: Callable[[Seen], bool], action: Callable[[], None]
) -> Iterator[None]:
    """Within the block, run `action` as soon as the endpoint has seen a `wanted` request."""
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            if any(wanted(s) for s in list(endpoint.seen)):
                action()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()  # never acts after the block, when the test may have stopped the endpoint
        watcher.join(timeout=5)


def _a_part_stored(seen: Seen) -> bool:
    return seen.operation == "UploadPart" and seen.status == 200


def _write_checked(seen: Seen) -> bool:
    """The join step's check that the keys may write: after it, COS is needed only to store."""
    return seen.key.endswith(WRITE_CHECK_NAME) and seen.status == 200


def _kept_folder(message: str) -> Path:
    return Path(message.split("(media kept in ")[1].rstrip(")"))


# --- COS down for a minute during an upload ---------------------------------------------


def test_cos_down_for_a_minute_mid_upload_then_the_file_is_delivered(
    cos: CosEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Parts of 1 MiB, one at a time, at 512 kB/s: a 5 s recording of 640x480 (about 1.4 MB)
    # goes up in two parts, and COS goes away as soon as the first is stored.
    cos.link_bytes_per_second = 512_000
    for name, value in {
        "COS_PART_SIZE_MB": "1",
        "COS_UPLOAD_THREADS": "1",
        "KEEP_LOCAL_COPY": "true",
        # For speed only: whole-file attempts 0.5, 1, 2 ... 32, 64 s apart (the defaults: 2 s
        # on, see test_the_default_upload_retries_outlast_a_90_s_outage), so the attempt
        # that finds COS back comes some 60 to 85 s after it went away, not up to 2 min.
        "UPLOAD_BACKOFF_SECONDS": "0.5",
        "UPLOAD_ATTEMPTS": "10",
    }.items():
        monkeypatch.setenv(f"RECORDER_{name}", value)
    request = parse_request(_request())
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=5.0, width=640, height=480)])
    with (
        _when_seen(cos, _a_part_stored, lambda: cos.go_down_for(OUTAGE_SECONDS)),
        SimRoom(request.SdkAppId, request.room, script),
    ):
        document, state = run_request(request)

    assert cos.went_down is not None and cos.came_back is not None
    outage = cos.came_back - cos.went_down
    assert OUTAGE_SECONDS <= outage < OUTAGE_SECONDS + 5
    assert state.is_completed(), state.message
    [entry] = document.Files
    assert entry.Status == 1, entry.Message
    key = _key(entry.RecordFile)
    [local] = (tmp_path / "work").rglob("teacher_*.mp4")
    stored = cos.object(key)
    assert stored == local.read_bytes()
    assert CRC64(stored) == file_crc64(local)
    assert len(stored) > 1024 * 1024  # really two parts

    during = [s for s in cos.seen if cos.went_down <= s.at < cos.came_back]
    after = [s for s in cos.seen if s.at >= cos.came_back]
    assert all(s.status == 0 for s in during), during  # nothing was answered while it was down
    parts = [(s.query["partNumber"], s.status) for s in cos.seen if s.operation == "UploadPart"]
    # The upload resumed: the part COS already held was not sent again, the upload not restarted.
    assert parts.count(("1", 200)) == 1 and parts.count(("2", 200)) == 1, parts
    assert [s.operation for s in cos.seen].count("InitiateMultipartUpload") == 1
    assert "ListParts" in [s.operation for s in after]
    [completed] = [s for s in after if s.operation == "CompleteMultipartUpload" and s.status == 200]
    delivered_after = completed.at - cos.came_back
    runs = task_run_states(state)
    print(
        f"\nCOS down {outage:.1f} s; delivered {delivered_after:.1f} s after it came back; "
        f"upload task runs: {runs['upload-teacher']}"
    )
    assert delivered_after < 40  # the next whole-file attempt, not a fresh run
    assert runs["upload-teacher"] == ["Completed"]


def test_the_default_upload_retries_outlast_a_90_s_outage() -> None:
    defaults = RecorderSettings.model_fields
    attempts = defaults["upload_attempts"].default
    backoff = defaults["upload_backoff_seconds"].default
    waits = exponential_backoff(backoff)(attempts - 1)  # as flows.record_room gives them to Prefect
    # Prefect's jitter (factor 0.2 in record_room) shortens a wait to no less than 0.82 of it.
    assert 0.82 * sum(waits) >= 90, waits


# --- COS down for good, then a later retry of the run ------------------------------------


def test_cos_down_for_good_keeps_the_media_and_a_later_retry_of_the_run_delivers(
    cos: CosEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt fails (Status 0, the media kept); once COS is back, the failed flow
    run is retried as an operator would: `prefect flow-run retry`, in another process. The
    same run id means the same work folder, whose journal says the room is over, so the retry
    delivers the kept media without recording or converting again."""
    monkeypatch.setenv("RECORDER_UPLOAD_ATTEMPTS", "2")
    monkeypatch.setenv("RECORDER_UPLOAD_BACKOFF_SECONDS", "0.2")
    # Started as the gateway starts runs: the secrets sealed with the service key, which the
    # retrying process has too (a worker's environment).
    monkeypatch.setenv("RECORDER_SERVICE_KEY", new_service_key())
    with Receiver() as receiver:
        full = parse_request(_request(receiver.url))
        public = parse_request(public_parameters(full))
        sealed = seal_secrets(full, RecorderSettings().service_key)
        script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=3.0)])
        with _when_seen(cos, _write_checked, cos.stop), SimRoom(full.SdkAppId, full.room, script):
            state = record_room(public, sealed_secrets=sealed, return_state=True)

        assert state.is_failed()
        [entry] = ResultDocument.model_validate(receiver.received[0].json()).Files
        assert entry.Status == 0 and entry.RecordFile == ""
        assert entry.Message.startswith("write to COS failed: COS did not answer: connection refused"), (
            entry.Message
        )
        folder = _kept_folder(entry.Message)
        [converted] = folder.glob("teacher_*.mp4")
        kept = converted.read_bytes()
        assert segment_files(folder) and (folder / "take.json").is_file()

        cos.start()
        flow_run_id = state.state_details.flow_run_id
        assert flow_run_id is not None
        retried = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "flow-run",
                "retry",
                str(flow_run_id),
                "--entrypoint",
                "flows/record_room.py:record_room",
            ],
            cwd=REPO_ROOT,
            # The same API and the same result storage: the retry finds the first attempt's
            # task results there (Prefect's cache, keyed by inputs and run id).
            env=os.environ
            | {
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        printed = retried.stdout + retried.stderr
        assert retried.returncode == 0, printed
        assert "completed successfully" in printed
        assert len(receiver.received) == 2

    [entry] = ResultDocument.model_validate(receiver.received[1].json()).Files
    assert entry.Status == 1, entry.Message
    stored = cos.object(_key(entry.RecordFile))
    assert stored == kept  # the file kept on disk, intact
    # Recorded and converted once: the retry used the first attempt's results.
    runs = task_run_states(state)
    assert sorted(runs["record-teacher"]) == ["Cached", "Completed"], runs
    assert sorted(runs["transcode-teacher"]) == ["Cached", "Completed"], runs
    assert not folder.exists()  # stored at last, the local media is gone
    for secret in (SECRET_KEY, USER_SIG):
        assert secret not in printed
    assert_secrets_absent(flow_run_id, [SECRET_KEY, USER_SIG], expect_in_logs="stored")


# --- the work folder fills up while recording ---------------------------------------------

# Records one take in a process of its own (a file size limit is per process; a tmpfs mount
# is per mount namespace), then copies what is on disk out for the test to look at.
_RECORD = r"""
import json, os, resource, shutil, signal, sys
from datetime import datetime, UTC
from pathlib import Path

url, folder, copy_to = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
size_limit = int(sys.argv[4])
if size_limit:
    # Past the limit a write fails with EFBIG, rather than SIGXFSZ killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_limit, resource.RLIM_INFINITY))

from recorder.recording import record_take
from recorder.settings import RecorderSettings
from recorder.workspace import Take

take = Take(anchor="teacher", started_at=datetime.now(UTC), stream_url=url)
recording = record_take(take, folder, RecorderSettings())
disk = os.statvfs(folder)
shutil.copytree(folder, copy_to)
free = disk.f_bavail * disk.f_frsize
print(json.dumps({"recording": json.loads(recording.model_dump_json()), "free_bytes": free}))
"""


def _record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, size_limit: int = 0, tmpfs_bytes: int = 0
) -> tuple[Recording, int, Path, float, float]:
    """A take recorded by another process while the anchor publishes for 30 s: the Recording,
    the work folder's free bytes after it, a copy of the take's folder, how long the recorder
    ran, and how long the anchor had been publishing by then."""
    work = tmp_path / "work"
    work.mkdir()
    copy = tmp_path / "kept"
    command = [sys.executable, "-c", _RECORD]
    if tmpfs_bytes:
        # A small file system on the work folder, in a mount namespace of the child's own.
        command = [
            "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            f'mount -t tmpfs -o size={tmpfs_bytes} tmpfs "$1" && shift && exec "$@"', "sh", str(work),
            *command,
        ]  # fmt: skip
    monkeypatch.setenv("RECORDER_READ_TIMEOUT_SECONDS", "5")
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=30.0)])
    with SimRoom(1400000000, "full", script) as room:
        started = time.monotonic()
        child = subprocess.run(
            [*command, room.stream_url("teacher"), str(work / "take"), str(copy), str(size_limit)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
        published = room.elapsed()
    assert child.returncode == 0, child.stdout + child.stderr
    result = json.loads(child.stdout.splitlines()[-1])
    return Recording.model_validate(result["recording"]), result["free_bytes"], copy, took, published


def _media_seconds(segments: list[Path]) -> float:
    """How much video the segments hold, decoded one after another as the transcoder reads them."""
    with SegmentReader(segments) as reader, av.open(reader, format="mpegts") as joined:
        assert isinstance(joined, av.container.InputContainer)
        times = [frame.time for frame in joined.decode(video=0) if frame.time is not None]
    return max(times) - min(times)


def test_a_file_size_limit_ends_the_recording_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One long segment meets the limit (RLIMIT_FSIZE, as `ulimit -f` sets it) after some 3 s.
    limit = 400_000
    monkeypatch.setenv("RECORDER_SEGMENT_SECONDS", "60")
    recording, _, kept, took, published = _record(tmp_path, monkeypatch, size_limit=limit)

    assert recording.ended_because == "the work folder is full: File too large"
    [segment] = segment_files(kept)
    # Filled up to the limit (the last write was cut there), and it plays up to its last packet.
    assert limit - 188 * 10 <= segment.stat().st_size <= limit
    assert max(decode_to_end(segment).values()) > 0
    assert _media_seconds([segment]) == pytest.approx(recording.seconds, abs=0.5)
    assert 1.0 < recording.seconds < published
    assert took < 15  # it stopped when the file was full, not when the anchor left (30 s)
    print(
        f"\nsize limit {limit} B: kept {segment.stat().st_size} B, {recording.seconds:.1f} s of media; "
        f"the anchor had published {published:.1f} s when the recorder was done ({took:.1f} s)"
    )


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    where.mkdir(exist_ok=True)
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
         str(where)],
        capture_output=True,
        timeout=10,
    )  # fmt: skip
    return probe.returncode == 0


def test_a_full_work_folder_ends_the_recording_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("no user and mount namespaces here to mount a small tmpfs in")
    size = 1024 * 1024
    monkeypatch.setenv("RECORDER_SEGMENT_SECONDS", "1")
    recording, free_bytes, kept, took, published = _record(tmp_path, monkeypatch, tmpfs_bytes=size)

    assert recording.ended_because == "the work folder is full: No space left on device"
    assert free_bytes == 0
    segments = segment_files(kept)
    kept_bytes = sum(s.stat().st_size for s in segments)
    assert len(segments) >= 3 and kept_bytes > 0.9 * size
    for segment in segments:  # the one cut off by the full disk too
        assert max(decode_to_end(segment).values()) > 0, segment.name
    assert _media_seconds(segments) == pytest.approx(recording.seconds, abs=1.0)
    assert 2.0 < recording.seconds < published
    assert took < 20  # it stopped when the disk was full, not when the anchor left (30 s)
    print(
        f"\ntmpfs of {size} B: kept {kept_bytes} B in {len(segments)} segments, {recording.seconds:.1f} s "
        f"of media; the anchor had published {published:.1f} s when the recorder was done ({took:.1f} s)"
    )
