"""A source that drops: the anchor's stream goes away and comes back, in a real flow run over
a simulated room whose anchor really stops publishing and starts again."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from flows.record_room import run_request
from recorder.request import parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from tests.conftest import Dirs
from tests.media_check import decode_to_end, ffprobe

pytestmark = pytest.mark.timeout(180)


def _run(script: SimScript, **changes: Any) -> ResultDocument:
    request = parse_request(
        {
            "SdkAppId": 1400000000,
            "RoomId": 8801,
            "UserId": "recorder_drop",
            "UserSig": "sig-DROP",
            "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789"},
            "Mode": "02",
            **changes,
        }
    )
    with SimRoom(request.SdkAppId, request.room, script):
        document, _ = run_request(request)
    return document


def _dts_never_decrease(path: Path) -> None:
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,dts", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    last: dict[str, int] = {}
    for line in shown.split():
        stream, dts = line.split(",")[:2]
        if dts == "N/A":
            continue
        assert int(dts) > last.get(stream, -(2**62)), f"stream {stream}: DTS {dts} after {last[stream]}"
        last[stream] = int(dts)


def test_a_stream_back_within_the_reconnect_window_continues_the_same_file(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDER_RECONNECT_SECONDS", "15")  # the default
    # On air 6 s, gone 10 s (the publisher's connection dropped), back 8 s; then the room ends.
    script = SimScript(
        anchors=[
            SimAnchor(user_id="teacher", leave=6.0),
            SimAnchor(user_id="teacher", join=16.0, leave=24.0),
        ],
        dismiss_at=25.0,
    )
    document = _run(script, MaxIdleTime=30)

    [entry] = document.Files
    assert entry.Status == 1, entry
    assert "came back 1 time(s) into the same file" in entry.Message, entry.Message
    path = Path(entry.RecordFile.removeprefix("file://"))
    probed = ffprobe(path)
    # Both appearances (14 s on air), and no more than the outage between them.
    assert 13.0 <= probed.duration <= 6.0 + 10.0 + 8.0 + 1.0, probed.duration
    reached = decode_to_end(path)
    assert abs(reached["video"] - reached["audio"]) < 0.5, reached
    _dts_never_decrease(path)


def test_a_stream_back_after_the_window_is_a_second_file(dirs: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_RECONNECT_SECONDS", "2")
    script = SimScript(
        anchors=[
            SimAnchor(user_id="teacher", leave=4.0),
            SimAnchor(user_id="teacher", join=10.0, leave=14.0),
        ],
        dismiss_at=15.0,
    )
    document = _run(script, MaxIdleTime=30)

    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1), ("teacher", 1)], document
    first, second = (Path(f.RecordFile.removeprefix("file://")) for f in document.Files)
    assert first != second
    for path in (first, second):
        assert 3.0 <= ffprobe(path).duration <= 5.0
        decode_to_end(path)
        _dts_never_decrease(path)


def test_a_drop_longer_than_the_idle_rule_ends_the_recording(dirs: Dirs) -> None:
    script = SimScript(
        anchors=[SimAnchor(user_id="teacher", leave=4.0), SimAnchor(user_id="teacher", join=20.0, leave=24.0)]
    )
    document = _run(script, MaxIdleTime=3)  # reconnect window 1 s (tests' default), idle 3 s

    [entry] = document.Files  # the run ended before the anchor came back
    assert entry.Status == 1 and "the stream ended" in entry.Message, entry
    assert 3.0 <= ffprobe(Path(entry.RecordFile.removeprefix("file://"))).duration <= 5.0
