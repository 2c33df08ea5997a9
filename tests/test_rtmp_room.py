"""The `rtmp` room against a real nginx-rtmp (run from deployments/nginx-rtmp.conf) with
real ffmpeg publishers, and one whole flow run recording from it."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import av
import httpx
import pytest
from pydantic import SecretStr

from recorder.request import parse_request
from recorder.rooms import open_room
from recorder.rooms.base import RoomNotFoundError
from recorder.rooms.rtmp import RtmpRoom, publishing_streams
from recorder.rooms.rtmp_names import stream_name
from recorder.settings import RecorderSettings
from tests.media_check import decode_to_end, ffprobe
from tests.nginx_rtmp import NginxRtmp, Publisher

APP = 1400000000
SECRET = SecretStr("relay-key-for-tests")


def _settings(server: NginxRtmp, secret: SecretStr | None = None) -> RecorderSettings:
    return RecorderSettings(
        room_backend="rtmp",
        rtmp_url=server.rtmp_url,
        rtmp_stat_url=server.stat_url,
        rtmp_stream_secret=secret,
    )


def _wait_for(condition: Callable[[], bool], seconds: float) -> float | None:
    """Seconds until `condition()` held (polled every 20 ms), or None if it did not in time."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    """One nginx for the module: each test uses rooms of its own."""
    with NginxRtmp(tmp_path_factory.mktemp("nginx-rtmp")) as nginx:
        yield nginx


def test_publishers_follow_the_streams_of_this_room_with_the_right_key(server: NginxRtmp) -> None:
    room = open_room(_settings(server, SECRET), APP, "class 7|A")
    assert isinstance(room, RtmpRoom)
    assert room.publishers() == set()
    assert not room.ended() and not room.recorder_removed()

    url = room.stream_url("student_1")
    assert url == f"{server.rtmp_url}/{stream_name(APP, 'class 7|A', 'student_1', SECRET)}"
    # The same anchor in another room, and in this room with a key made by another secret:
    # streams on the server that are not this room's anchors.
    elsewhere = f"{server.rtmp_url}/{stream_name(APP, 'class 7|B', 'student_1', SECRET)}"
    forged = f"{server.rtmp_url}/{stream_name(APP, 'class 7|A', 'student_1', SecretStr('guess'))}"
    with (
        Publisher(elsewhere, 6, video=False),
        Publisher(forged, 6, video=False),
        Publisher(url, 3) as anchor,
    ):
        listed_after = _wait_for(lambda: room.publishers() == {"student_1"}, 10)
        assert listed_after is not None, f"never listed: {room.publishers()} {anchor.errors()}"
        # All three are on the server; one of them is this room's.
        on_server = _wait_for(lambda: len(publishing_streams(_stat(room), "live")) == 3, 5)
        assert on_server is not None, publishing_streams(_stat(room), "live")
        assert anchor.wait(timeout=10) == 0, anchor.errors()
        gone_after = _wait_for(lambda: room.publishers() == set(), 5)
        assert gone_after is not None, "still listed after the publisher ended"
        print(f"listed {listed_after:.2f} s after ffmpeg started; unlisted {gone_after:.2f} s after it ended")
        assert len(publishing_streams(_stat(room), "live")) == 2  # the others still publish


def _stat(room: RtmpRoom) -> bytes:
    return httpx.get(room.stat_url, timeout=3.0, trust_env=False).content


def test_the_stream_url_plays_h264_and_aac(server: NginxRtmp) -> None:
    room = RtmpRoom(APP, "43474", _settings(server))
    with Publisher(room.stream_url("teacher"), 4) as anchor:
        assert _wait_for(lambda: room.publishers() == {"teacher"}, 10) is not None, anchor.errors()
        # Join mid-way between two keyframes, as a recorder joining a relay does.
        time.sleep(0.5)
        started = time.monotonic()
        # Opened as recorder.media.capture opens it: one second of probing.
        with av.open(
            room.stream_url("teacher"),
            timeout=(5.0, 5.0),
            options={"analyzeduration": "1000000", "probesize": "500000"},
        ) as player:
            opened_after = time.monotonic() - started
            assert sorted(s.codec_context.name for s in player.streams) == ["aac", "h264"]
            packets = {"video": 0, "audio": 0}
            keyframes = 0
            for packet in player.demux(*player.streams):
                if packet.dts is None:
                    continue
                packets[packet.stream.type] += 1
                keyframes += packet.stream.type == "video" and packet.is_keyframe
                if keyframes and packets["audio"] > 50:
                    break
        print(f"opened in {opened_after:.2f} s; {packets} before the first keyframe and 50 audio packets")
        assert packets["video"] > 0 and packets["audio"] > 50 and keyframes


def test_an_unreadable_statistics_page_is_a_room_not_found(server: NginxRtmp, tmp_path: Path) -> None:
    nothing_there = server.stat_url.replace("/stat", "/nothing")
    not_stat = RecorderSettings(room_backend="rtmp", rtmp_url=server.rtmp_url, rtmp_stat_url=nothing_there)
    with pytest.raises(RoomNotFoundError, match=re.escape(not_stat.rtmp_stat_url) + ".*HTTP 404"):
        open_room(not_stat, APP, "r")

    with NginxRtmp(tmp_path) as going:
        room = open_room(_settings(going), APP, "r")
        assert room.publishers() == set()
    # The server is gone: the room must fail loudly, never read as "nobody is publishing".
    with pytest.raises(RoomNotFoundError, match=re.escape(going.stat_url)):
        room.publishers()
    with pytest.raises(RoomNotFoundError, match=re.escape(going.stat_url)):
        open_room(_settings(going), APP, "r")


def test_publishing_streams_reads_only_publishers_of_the_application() -> None:
    page = b"""<?xml version="1.0" encoding="utf-8" ?>
<rtmp><nginx_version>1.22.1</nginx_version>
<server><application><name>live</name><live>
  <stream><name>on_air</name><client><id>2</id><publishing/></client><publishing/><active/></stream>
  <stream><name>players_only</name><client><id>3</id></client></stream>
  <nclients>2</nclients></live></application>
 <application><name>other</name><live><stream><name>elsewhere</name><publishing/></stream></live></application>
</server>
<server><application><name>live</name><live><stream><name>second_port</name><publishing/></stream></live>
</application></server></rtmp>"""
    assert publishing_streams(page, "live") == {"on_air", "second_port"}
    assert publishing_streams(page, "none") == set()
    for bad in (b"<html>404</html>", b"not xml"):
        with pytest.raises(ValueError):
            publishing_streams(bad, "live")


# -- the whole flow ----------------------------------------------------------------------


PUBLISHED_SECONDS = 4.0


@pytest.fixture
def rtmp_env(
    server: NginxRtmp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> Iterator[Path]:
    """The recorder's settings for a run against `server`, as test_flow's `dirs`; the work folder."""
    monkeypatch.delenv("CFS_PATH", raising=False)
    monkeypatch.delenv("RECORDER_RTMP_STREAM_SECRET", raising=False)
    monkeypatch.setenv("RECORDER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("RECORDER_STORAGE_DIR", str(tmp_path / "recordings"))
    monkeypatch.setenv("RECORDER_POLL_SECONDS", "0.2")
    for name, value in server.settings_env().items():
        monkeypatch.setenv(name, value)
    yield tmp_path / "work"


def test_a_flow_run_records_an_anchor_from_nginx_rtmp(server: NginxRtmp, rtmp_env: Path) -> None:
    from flows.record_room import run_request

    raw: dict[str, Any] = {
        "SdkAppId": APP,
        "RoomId": 8808,
        "UserId": "recorder_1",
        "UserSig": "sig",
        "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789", "Path": "/trtc"},
        "Mode": "02",
        "MaxIdleTime": 2,
    }
    request = parse_request(raw)
    anchor = Publisher(f"{server.rtmp_url}/{stream_name(APP, '8808', 'teacher', None)}", PUBLISHED_SECONDS)

    # The relay starts once the run has joined the room (its work folder exists), so the
    # recording covers the stream from near its start, as when a relay starts on a join.
    run_over = threading.Event()

    def start_on_join() -> None:
        joined = _wait_for(lambda: run_over.is_set() or (rtmp_env.is_dir() and any(rtmp_env.iterdir())), 60)
        if joined is not None and not run_over.is_set():
            anchor.start()

    relay = threading.Thread(target=start_on_join, daemon=True)
    relay.start()
    try:
        document, state = run_request(request)
    finally:
        run_over.set()
        relay.join(timeout=5)
        anchor.stop()  # after the join: a publisher the thread started is stopped too

    assert state.is_completed(), state.message
    (entry,) = document.Files
    assert (entry.UserId, entry.Status) == ("teacher", 1), entry.Message
    path = Path(unquote(urlparse(entry.RecordFile).path))
    probe = ffprobe(path)
    assert {kind: probe.codec(kind) for kind in probe.streams} == {"video": "h264", "audio": "aac"}
    print(f"recorded {probe.duration:.2f} s of {PUBLISHED_SECONDS:g} s published: {entry.Message}")
    assert probe.duration == pytest.approx(PUBLISHED_SECONDS, abs=1.5)
    reached = decode_to_end(path)
    assert set(reached) == {"video", "audio"}
    for seconds in reached.values():
        assert seconds == pytest.approx(probe.duration, abs=0.5)
