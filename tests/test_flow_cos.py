"""The whole pipeline storing into COS: a real flow run, the real SDK, the loopback endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from qcloud_cos import CosConfig, CosS3Client  # type: ignore[import-untyped]

from flows.record_room import record_room, run_request
from recorder.request import parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.storage.cos import WRITE_CHECK_NAME
from tests.cos_endpoint import CosEndpoint
from tests.http_receiver import Received, Receiver
from tests.media_check import decode_to_end, ffprobe
from tests.prefect_records import assert_secrets_absent, task_run_states

BUCKET = "class-1250000000"
REGION = "ap-shanghai"
SECRET_ID = "AKIDflowtest"
SECRET_KEY = "flow-key-NEVER-STORE-3c8d"
USER_SIG = "sig-NEVER-STORE-e60b"

TWO_ANCHORS = SimScript(
    anchors=[
        SimAnchor(user_id="teacher", join=0.0, leave=3.0, tone_hz=440),
        SimAnchor(user_id="student_1", join=0.5, leave=2.5, tone_hz=660),
    ]
)


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Iterator[CosEndpoint]:
    with CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as running:
        monkeypatch.delenv("CFS_PATH", raising=False)
        for name in ("TENCENTCLOUD_SECRETID", "TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SESSIONTOKEN"):
            monkeypatch.delenv(name, raising=False)
        settings = {
            "WORK_DIR": str(tmp_path / "work"),
            "STORAGE_DIR": str(tmp_path / "never-used"),
            "POLL_SECONDS": "0.2",
            "STORAGE": "cos",
            "COS_SCHEME": "http",
            "COS_IP": running.host,
            "COS_PORT": str(running.port),
            "COS_TIMEOUT_SECONDS": "2",
            "COS_REQUEST_RETRIES": "1",
            "UPLOAD_ATTEMPTS": "2",
            "UPLOAD_BACKOFF_SECONDS": "0.2",
        }
        for name, value in settings.items():
            monkeypatch.setenv(f"RECORDER_{name}", value)
        yield running


def _request(callback: str | None = None, keys: bool = True, **changes: Any) -> dict[str, Any]:
    cos: dict[str, Any] = {"Region": REGION, "Bucket": BUCKET, "Path": "/lessons"}
    if keys:
        cos |= {"SecretId": SECRET_ID, "SecretKey": SECRET_KEY}
    request: dict[str, Any] = {
        "SdkAppId": 1400000000,
        "RoomId": 2001,
        "UserId": "recorder_1",
        "UserSig": USER_SIG,
        "CosConfig": cos,
        "Mode": "02",
        "MaxIdleTime": 1,
    }
    if callback:
        request["Callback"] = callback
    return request | changes


def _key(url: str) -> str:
    parsed = urlparse(url)
    assert parsed.scheme == "https" and parsed.netloc == f"{BUCKET}.cos.{REGION}.myqcloud.com", url
    return unquote(parsed.path).lstrip("/")


def _read_back(endpoint: CosEndpoint, key: str) -> bytes:
    """Through the SDK, as a user of the bucket would."""
    config = CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=SECRET_KEY, **endpoint.sdk_options())
    answer = CosS3Client(config, retry=1).get_object(Bucket=BUCKET, Key=key)
    return bytes(answer["Body"].get_raw_stream().read())


def _after_write_check(endpoint: CosEndpoint, action: Callable[[], None]) -> threading.Thread:
    """Run `action` once the join step's write check has reached COS (bounded wait)."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(s.key.endswith(WRITE_CHECK_NAME) and s.status == 200 for s in list(endpoint.seen)):
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_recordings_land_in_cos_byte_identical_to_the_local_files(
    endpoint: CosEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECORDER_KEEP_LOCAL_COPY", "true")
    request = parse_request(_request())
    with SimRoom(request.SdkAppId, request.room, TWO_ANCHORS):
        document, state = run_request(request)

    assert state.is_completed(), state.message
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1), ("student_1", 1)]
    keys = [_key(f.RecordFile) for f in document.Files]
    assert all(k.startswith("lessons/2001/") and k.endswith(".mp4") for k in keys)
    # Only the recordings and their previews are in the bucket: the join step's write check
    # left nothing.
    previews = [k.removesuffix(".mp4") + ending for k in keys for ending in (".jpg", ".png")]
    assert sorted(endpoint.keys()) == sorted(keys + previews)
    local = {p.read_bytes(): p for p in (tmp_path / "work").rglob("*.mp4")}
    for entry, key in zip(document.Files, keys, strict=True):
        stored = _read_back(endpoint, key)
        assert stored in local, f"{key} matches no local file"
        path = local[stored]
        assert path.name.startswith(entry.UserId)
        assert set(ffprobe(path).streams) == {"video", "audio"}
        assert decode_to_end(path)["video"] > 0


def test_a_wrong_secret_key_fails_in_seconds_before_recording(endpoint: CosEndpoint, tmp_path: Path) -> None:
    wrong = "wrong-key-NEVER-STORE-77f1"
    # Anchors on air for a minute, and the original's MaxIdleTime: only the early check
    # can end this run quickly.
    script = SimScript(
        anchors=[SimAnchor(user_id="teacher", leave=60.0), SimAnchor(user_id="pupil", leave=60.0)]
    )
    raw = _request(MaxIdleTime=300)
    raw["CosConfig"]["SecretKey"] = wrong
    with Receiver() as receiver:
        request = parse_request(raw | {"Callback": receiver.url})
        started = time.monotonic()
        with SimRoom(request.SdkAppId, request.room, script):
            document, state = run_request(request)
        elapsed = time.monotonic() - started

    assert state.is_failed()
    assert elapsed < 20, elapsed
    assert [(f.UserId, f.Status, f.RecordFile) for f in document.Files] == [
        ("pupil", 0, ""),
        ("teacher", 0, ""),
    ]
    for entry in document.Files:
        assert entry.Message.startswith(
            "write to COS failed: COS refused the credentials from the request (403 SignatureDoesNotMatch"
        ), entry.Message
        assert entry.Message.endswith("nothing was recorded")
    assert [ResultDocument.model_validate(r.json()) for r in receiver.received] == [document]
    # A refused key is not retried, and nothing was recorded.
    assert [(s.method, s.status) for s in endpoint.seen] == [("PUT", 403)]
    assert not list((tmp_path / "work").rglob("seg_*.ts"))
    secrets = [wrong, USER_SIG, SECRET_KEY]
    assert all(secret not in document.model_dump_json() for secret in secrets)
    assert_secrets_absent(state.state_details.flow_run_id, secrets, expect_in_logs="SignatureDoesNotMatch")


def test_no_credentials_anywhere_fails_before_recording(endpoint: CosEndpoint) -> None:
    request = parse_request(_request(keys=False))
    with SimRoom(request.SdkAppId, request.room, TWO_ANCHORS):
        document, state = run_request(request)
    assert state.is_failed()
    assert document.Files and all(
        f.Message.startswith("write to COS failed: no COS credentials: give CosConfig.SecretId")
        for f in document.Files
    )
    assert endpoint.seen == []


def test_cos_down_for_the_whole_retry_budget_then_a_retry_of_the_run_delivers(endpoint: CosEndpoint) -> None:
    # COS goes down right after the join step's check, so both uploads exhaust their
    # retries; it comes back when the first result arrives, and the retried run must store
    # the files it kept, without recording or transcoding again.
    _after_write_check(endpoint, endpoint.stop)
    kept: dict[Path, bool] = {}  # folder the first Messages name -> was it there then

    def come_back(posted: Received) -> None:
        if not kept:
            for entry in ResultDocument.model_validate(posted.json()).Files:
                folder = Path(entry.Message.split("(media kept in ")[1].rstrip(")"))
                kept[folder] = any(folder.glob("*.mp4"))
            endpoint.start()

    with Receiver(on_post=come_back) as receiver:
        request = parse_request(_request(receiver.url))
        with SimRoom(request.SdkAppId, request.room, TWO_ANCHORS):
            state = record_room.with_options(retries=1, retry_delay_seconds=0)(request, return_state=True)

    first, second = (ResultDocument.model_validate(r.json()) for r in receiver.received)
    assert [f.Status for f in first.Files] == [0, 0]
    for entry in first.Files:
        assert entry.Message.startswith("write to COS failed: COS did not answer: connection refused"), (
            entry.Message
        )
    assert list(kept.values()) == [True, True]  # each file was kept while COS was down

    assert state.is_completed(), state.message
    assert [f.Status for f in second.Files] == [1, 1]
    for entry in second.Files:
        key = _key(entry.RecordFile)
        assert endpoint.object(key) == _read_back(endpoint, key)
        assert len(endpoint.object(key) or b"") > 10_000
    runs = task_run_states(state)
    for step in ("record", "transcode"):
        for anchor in ("teacher", "student_1"):
            assert sorted(runs[f"{step}-{anchor}"]) == ["Cached", "Completed"], runs
    # Stored at last, the local media is gone.
    assert not any(folder.exists() for folder in kept)


def test_temporary_credentials_from_the_environment_and_two_503s(
    endpoint: CosEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "session-token-NEVER-STORE-19ab"
    endpoint.secret_id, endpoint.secret_key, endpoint.token = "AKIDtemporary", "tmp-key-NEVER-STORE-4d", token
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", "AKIDtemporary")
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", "tmp-key-NEVER-STORE-4d")
    monkeypatch.setenv("TENCENTCLOUD_SESSIONTOKEN", token)
    # The uploads meet two 503s (after the write check): the SDK's retries carry them.
    monkeypatch.setenv("RECORDER_COS_REQUEST_RETRIES", "2")
    _after_write_check(endpoint, lambda: endpoint.fail_next(2, 503, operation="PutObject"))

    request = parse_request(_request(keys=False, Mode="00"))
    with SimRoom(request.SdkAppId, request.room, TWO_ANCHORS):
        document, state = run_request(request)

    assert state.is_completed(), state.message
    assert [f.Status for f in document.Files] == [1, 1]
    assert [s.status for s in endpoint.seen if s.method == "PUT"].count(503) == 2
    for entry in document.Files:
        assert entry.RecordFile.endswith(".mp3")
        assert endpoint.object(_key(entry.RecordFile))
    assert_secrets_absent(
        state.state_details.flow_run_id, [token, "tmp-key-NEVER-STORE-4d", USER_SIG], expect_in_logs="stored"
    )


def test_files_are_stored_while_recording_and_the_steps_after_only_report_them(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    """The default: each take goes to COS as it is recorded; the transcode and upload steps
    find it done. What is stored is a whole MP4 that plays to the end, and nothing is left
    behind: no local copy, no unfinished upload in the bucket."""
    request = parse_request(_request())
    with SimRoom(request.SdkAppId, request.room, TWO_ANCHORS):
        document, state = run_request(request)

    assert state.is_completed(), state.message
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1), ("student_1", 1)]
    for entry, seconds in zip(document.Files, (3.0, 2.0), strict=True):
        copy = tmp_path / f"{entry.UserId}.mp4"
        copy.write_bytes(_read_back(endpoint, _key(entry.RecordFile)))
        probe = ffprobe(copy)
        assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
        assert probe.duration == pytest.approx(seconds, abs=0.7)
        assert decode_to_end(copy)["audio"] == pytest.approx(seconds, abs=0.7)
    assert endpoint.pending_uploads() == []
    assert not any((tmp_path / "work").rglob("*.mp4"))
    assert_secrets_absent(
        state.state_details.flow_run_id, [SECRET_KEY, USER_SIG], expect_in_logs="while recording"
    )


def test_a_cut_recording_puts_each_piece_in_cos_as_soon_as_it_is_whole(
    endpoint: CosEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For moderation: with a 10 s limit, the first piece of a 25 s recording is in the
    bucket while the anchor is still on air, not after the end; each piece plays alone."""
    monkeypatch.setenv("RECORDER_MAX_FILE_SECONDS", "10")
    request = parse_request(_request(Mode="02"))
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=25.0)])
    with SimRoom(request.SdkAppId, request.room, script):
        document, state = run_request(request)

    assert state.is_completed(), state.message
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1)] * 3
    keys = [_key(f.RecordFile) for f in document.Files]
    stored_at = {
        s.key: s.at for s in endpoint.seen if s.method == "PUT" and s.status == 200 and s.key in keys
    }
    assert set(stored_at) == set(keys)
    # Pieces 10 s apart on air are stored about 10 s apart, the first long before the last.
    assert stored_at[keys[1]] - stored_at[keys[0]] > 6.0, stored_at
    assert stored_at[keys[2]] - stored_at[keys[0]] > 12.0, stored_at
    for key, seconds in zip(keys, (10.0, 10.0, 5.0), strict=True):
        copy = tmp_path / key.replace("/", "_")
        copy.write_bytes(_read_back(endpoint, key))
        probe = ffprobe(copy)
        assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
        assert probe.duration == pytest.approx(seconds, abs=0.7)
        assert decode_to_end(copy)["video"] == pytest.approx(probe.duration, abs=0.3)
        # Its previews beside it, under the same stem.
        assert _read_back(endpoint, key.removesuffix(".mp4") + ".jpg")[:2] == b"\xff\xd8"
    assert endpoint.pending_uploads() == []
