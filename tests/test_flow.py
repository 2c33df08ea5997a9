"""The whole pipeline as a real Prefect flow run over a real simulated room."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from prefect.states import State

from flows.record_room import record_room, run_request
from recorder.request import parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from tests.conftest import Dirs
from tests.http_receiver import Receiver
from tests.media_check import decode_to_end, ffprobe
from tests.prefect_records import assert_secrets_absent, task_run_states

USER_SIG = "sig-NEVER-STORE-4f1c"
SECRET_KEY = "key-NEVER-STORE-9a7e"

TWO_ANCHORS = SimScript(
    anchors=[
        SimAnchor(user_id="teacher", join=0.0, leave=4.0, tone_hz=440),
        SimAnchor(user_id="student_1", join=0.5, leave=3.0, tone_hz=660),
    ]
)


def _request(callback: str | None, **changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "SdkAppId": 1400000000,
        "RoomId": 43474,
        "UserId": "recorder_1",
        "UserSig": USER_SIG,
        "CosConfig": {
            "Region": "ap-shanghai",
            "Bucket": "test-123456789",
            "Path": "/trtc",
            "SecretId": "AKIDexample",
            "SecretKey": SECRET_KEY,
        },
        "Mode": "02",
        "MaxIdleTime": 1,
    }
    if callback:
        request["Callback"] = callback
    request.update(changes)
    return request


def _run(raw: dict[str, Any], script: SimScript = TWO_ANCHORS) -> tuple[ResultDocument, State[Any]]:
    request = parse_request(raw)
    with SimRoom(request.SdkAppId, request.room, script):
        return run_request(request)


def _path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


EXPECTED = {
    "00": ("mp3", {"audio": "mp3"}),
    "01": ("mp4", {"video": "h264"}),
    "02": ("mp4", {"video": "h264", "audio": "aac"}),
}


@pytest.mark.parametrize("mode", ["00", "01", "02"])
def test_each_mode_records_each_anchor_into_its_own_file(dirs: Dirs, mode: str) -> None:
    with Receiver() as receiver:
        document, state = _run(_request(receiver.url, Mode=mode))

    assert state.is_completed(), state.message
    extension, codecs = EXPECTED[mode]
    assert document.model_dump(mode="json") | {"Files": []} == {
        "SdkAppId": "1400000000",
        "RoomId": "43474",
        "StrRoomId": "",
        "UserId": "recorder_1",
        "Files": [],
    }
    assert [f.UserId for f in document.Files] == ["teacher", "student_1"]
    published = {"teacher": 4.0, "student_1": 2.5}
    for entry in document.Files:
        assert entry.Status == 1, entry.Message
        assert entry.Message.startswith("ok: ")
        path = _path(entry.RecordFile)
        assert path.parent == (dirs.storage / "trtc" / "43474").resolve()
        assert path.name.startswith(f"{entry.UserId}_") and path.suffix == f".{extension}"
        probe = ffprobe(path)
        assert {kind: str(s["codec_name"]) for kind, s in probe.streams.items()} == codecs
        assert probe.duration == pytest.approx(published[entry.UserId], abs=0.5)
        reached = decode_to_end(path)
        assert set(reached) == set(codecs)
        for seconds in reached.values():
            assert seconds == pytest.approx(published[entry.UserId], abs=0.5)

    # The callback got exactly the document the flow returned, once.
    assert len(receiver.received) == 1
    assert receiver.received[0].json() == document.model_dump(mode="json")
    # Everything is stored and delivered: nothing of the run is left in the work folder.
    assert not dirs.work.exists() or list(dirs.work.iterdir()) == []


def test_a_failed_transcode_fails_that_file_alone(dirs: Dirs) -> None:
    script = SimScript(
        anchors=[
            SimAnchor(user_id="camera_on", leave=3.0),
            SimAnchor(user_id="camera_off", join=0.2, leave=3.0, video=False),
        ]
    )
    raw = _request(None, Mode="01", StrRoomId="class 7|A")
    del raw["RoomId"]
    with Receiver() as receiver:
        raw["Callback"] = receiver.url
        document, state = _run(raw, script)

    assert state.is_failed()
    assert "camera_off: transcoding failed" in (state.message or "")
    assert (document.RoomId, document.StrRoomId) == ("", "class 7|A")
    on, off = document.Files
    assert (on.UserId, on.Status) == ("camera_on", 1)
    assert _path(on.RecordFile).parent == (dirs.storage / "trtc" / "class%207%7CA").resolve()
    assert ffprobe(_path(on.RecordFile)).codec("video") == "h264"
    assert (off.UserId, off.Status, off.RecordFile) == ("camera_off", 0, "")
    assert off.Message.startswith("transcoding failed: Mode 01 (video) needs video")
    # The failed anchor's media is kept, whole, where the Message says.
    kept = Path(off.Message.split("(media kept in ")[1].rstrip(")"))
    assert kept.is_dir() and kept.is_relative_to(dirs.work)
    segments = sorted(kept.glob("seg_*.ts"))
    assert segments and decode_to_end(segments[0])["audio"] > 0
    # The callback is still sent, with the failure in it.
    assert [r.json() for r in receiver.received] == [document.model_dump(mode="json")]


def test_retrying_the_run_reruns_only_what_failed(dirs: Dirs) -> None:
    # Storage is broken at first (a file where the request's Path folder should be: the
    # storage folder itself is writable, so the run starts) and mended when the first result
    # arrives: the retry must store the recordings without recording again.
    blocker = dirs.storage / "trtc"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")

    def mend(_: object) -> None:
        if blocker.is_file():
            blocker.unlink()

    with Receiver(on_post=mend) as receiver:
        request = parse_request(_request(receiver.url))
        with SimRoom(request.SdkAppId, request.room, TWO_ANCHORS):
            state = record_room.with_options(retries=1, retry_delay_seconds=0)(request, return_state=True)

    first, second = (ResultDocument.model_validate(r.json()) for r in receiver.received)
    assert [f.Status for f in first.Files] == [0, 0]
    assert all(f.Message.startswith("write to local storage failed: ") for f in first.Files)
    assert state.is_completed(), state.message
    assert [f.Status for f in second.Files] == [1, 1]
    assert state.result() == second
    for entry in second.Files:
        assert ffprobe(_path(entry.RecordFile)).duration > 2.0

    runs = task_run_states(state)
    # Each anchor was recorded and transcoded once; the retry took those results from the
    # first attempt and ran only the uploads again.
    for step in ("record", "transcode"):
        assert sorted(runs[f"{step}-teacher"]) == ["Cached", "Completed"], runs
        assert sorted(runs[f"{step}-student_1"]) == ["Cached", "Completed"], runs


def test_secrets_never_reach_prefect(dirs: Dirs) -> None:
    document, state = _run(_request(None))
    assert state.is_completed(), state.message
    assert_secrets_absent(state.state_details.flow_run_id, [USER_SIG, SECRET_KEY], expect_in_logs="teacher")
    assert USER_SIG not in document.model_dump_json()


def test_an_anchor_who_comes_back_gets_a_new_file(dirs: Dirs) -> None:
    script = SimScript(
        anchors=[
            SimAnchor(user_id="guest", join=0.0, leave=2.0),
            SimAnchor(user_id="guest", join=3.0, leave=5.0),
        ]
    )
    document, state = _run(_request(None, MaxIdleTime=3), script)
    assert state.is_completed(), state.message
    assert [(f.UserId, f.Status) for f in document.Files] == [("guest", 1), ("guest", 1)]
    first, second = (_path(f.RecordFile) for f in document.Files)
    assert first != second
    for path in (first, second):
        assert ffprobe(path).duration == pytest.approx(2.0, abs=0.5)


def test_removing_the_recorder_ends_the_recording_at_once(dirs: Dirs) -> None:
    # MaxIdleTime is the original's 300 s: only the removal can end this run quickly.
    script = SimScript(anchors=[SimAnchor(user_id="host", leave=60.0)], remove_recorder_at=2.5)
    started = time.monotonic()
    document, state = _run(_request(None, MaxIdleTime=300), script)
    assert time.monotonic() - started < 30
    assert state.is_completed(), state.message
    (entry,) = document.Files
    assert entry.Status == 1, entry.Message
    assert ffprobe(_path(entry.RecordFile)).duration == pytest.approx(2.5, abs=0.5)
