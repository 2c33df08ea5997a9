"""A sim room reached over loopback HTTP, as a flow run in a worker's process reaches it."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from recorder.rooms import open_room
from recorder.rooms.base import RoomNotFoundError
from recorder.rooms.sim import SimRoom, unregister
from recorder.rooms.sim_remote import RemoteSimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.settings import RecorderSettings

ROOT = Path(__file__).resolve().parents[1]
# Characters a StrRoomId may hold that a URL path may not: the path must percent-encode them.
ODD_ROOM = "desk | 7 %41 #?&"


def _sim(sim_room_url: str | None) -> RecorderSettings:
    return RecorderSettings(room_backend="sim", sim_room_url=sim_room_url)


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_remote_room_follows_the_script_from_the_first_look() -> None:
    script = SimScript(
        anchors=[SimAnchor(user_id="early", leave=1.5), SimAnchor(user_id="late", join=1.0, leave=5.0)]
    )
    with SimRoom(1, "remote-script", script) as room:
        remote = RemoteSimRoom(room.control_url, 1, "remote-script").check()
        # Finding the room is not looking at it: the clock starts at the first question.
        time.sleep(1.2)
        assert remote.publishers() == {"early"}
        assert _wait_until(lambda: remote.publishers() == {"early", "late"}, 2.0)
        assert _wait_until(lambda: remote.publishers() == {"late"}, 2.0)
        assert not remote.ended()
        assert not remote.recorder_removed()


def test_remote_room_ends_and_removes_the_recorder() -> None:
    anchors = [SimAnchor(user_id="a", leave=30.0)]
    with (
        SimRoom(1, "remote-dismiss", SimScript(anchors=anchors, dismiss_at=0.3)) as dismissed,
        SimRoom(1, "remote-removal", SimScript(anchors=anchors, remove_recorder_at=0.3)) as removal,
    ):
        gone = RemoteSimRoom(dismissed.control_url, 1, "remote-dismiss")
        removed = RemoteSimRoom(removal.control_url, 1, "remote-removal")
        assert gone.publishers() == {"a"} == removed.publishers()
        assert _wait_until(gone.ended, 2.0)
        assert _wait_until(removed.recorder_removed, 2.0)
        assert gone.publishers() == set() == removed.publishers()
        assert not removed.ended()


def test_remote_stream_decodes_and_odd_room_ids_work() -> None:
    script = SimScript(anchors=[SimAnchor(user_id="cam", leave=3.0, width=176, height=144, fps=10)])
    with SimRoom(1400000000, ODD_ROOM, script) as room:
        remote = RemoteSimRoom(room.control_url, 1400000000, ODD_ROOM)
        assert remote.publishers() == {"cam"}
        url = remote.stream_url("cam")
        assert url == room.stream_url("cam")
        with pytest.raises(RoomNotFoundError, match="nobody"):
            remote.stream_url("nobody")
        with av.open(url, timeout=10) as stream:
            assert {s.type: s.codec_context.name for s in stream.streams} == {"video": "h264", "audio": "aac"}
            packets = 0
            for packet in stream.demux():
                packets += packet.size > 0
                if packets == 10:
                    break
        assert packets == 10


def test_unknown_room_and_closed_port_name_the_url() -> None:
    with SimRoom(1, "here", SimScript(anchors=[SimAnchor(user_id="a", leave=5.0)])) as room:
        with pytest.raises(
            RoomNotFoundError, match=re.escape(f"{room.control_url}/rooms/1/elsewhere")
        ) as info:
            RemoteSimRoom(room.control_url, 1, "elsewhere").publishers()
        assert "404" in str(info.value) and "'here'" in str(info.value)  # which room it does run
        with pytest.raises(RoomNotFoundError, match="SdkAppId 2"):
            open_room(_sim(room.control_url), 2, "here")
    closed = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RoomNotFoundError, match=re.escape(closed)):
        RemoteSimRoom(closed, 1, "here").check()
    with pytest.raises(RoomNotFoundError, match="in this process"):
        open_room(_sim(None), 1, "here")  # no URL: the in-process registry's answer, as before


def test_open_room_prefers_this_process_then_the_url() -> None:
    with SimRoom(3, ODD_ROOM, SimScript(anchors=[SimAnchor(user_id="a", leave=5.0)])) as room:
        assert open_room(_sim("http://127.0.0.1:9"), 3, ODD_ROOM) is room  # the URL is not even tried
        unregister(room)  # as a worker's process sees it: the room runs elsewhere
        remote = open_room(_sim(room.control_url), 3, ODD_ROOM)
        assert isinstance(remote, RemoteSimRoom)
        assert remote.publishers() == {"a"}


def test_sim_room_command_serves_until_terminated(tmp_path: Path) -> None:
    script = tmp_path / "room.json"
    script.write_text(json.dumps({"anchors": [{"user_id": "agent_7", "leave": 30}], "dismiss_at": None}))
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "flows.cli", "sim-room", "--port", "0", "--script", str(script)]
    command += ["--sdk-app-id", "42", "--room", ODD_ROOM]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            _check_served_room(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _check_served_room(process: subprocess.Popen[str]) -> None:
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    # readline blocks; a thread lets the wait for the first line be bounded.
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=15)
    except queue.Empty:
        pytest.fail("recorder sim-room printed nothing in 15 s")
    found = re.fullmatch(
        rf"sim room 42/{re.escape(ODD_ROOM)} on (http://127\.0\.0\.1:\d+) "
        r"\(set RECORDER_SIM_ROOM_URL=(\S+)\)\n",
        line,
    )
    assert found, line + stderr.read() if process.poll() is not None else line
    url = found[1]
    assert found[2] == url
    room = open_room(_sim(url), 42, ODD_ROOM)  # not in this process: reached over HTTP
    assert isinstance(room, RemoteSimRoom)
    assert room.publishers() == {"agent_7"}
    assert room.stream_url("agent_7").startswith(f"{url}/live/")
    process.terminate()
    assert process.wait(timeout=10) == 0, stderr.read()
    with pytest.raises(RoomNotFoundError, match=re.escape(url)):
        room.ended()
