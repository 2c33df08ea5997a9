from __future__ import annotations

import time

import av
import pytest
from pydantic import ValidationError

from recorder.rooms.base import RoomNotFoundError
from recorder.rooms.sim import SimRoom, find_sim_room
from recorder.rooms.sim_script import SimAnchor, SimScript, demo_script


def _wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_publishers_follow_the_script() -> None:
    script = SimScript(
        anchors=[SimAnchor(user_id="early", leave=1.0), SimAnchor(user_id="late", join=0.6, leave=5.0)]
    )
    with SimRoom(1, "script", script) as room:
        room.begin()
        assert room.publishers() == {"early"}
        assert _wait_until(lambda: room.publishers() == {"early", "late"}, 2.0)
        assert _wait_until(lambda: room.publishers() == {"late"}, 2.0)
        assert not room.ended()
        assert not room.recorder_removed()


def test_stream_is_real_h264_and_aac_at_the_scripted_size() -> None:
    script = SimScript(anchors=[SimAnchor(user_id="cam", leave=2.0, width=176, height=144, fps=10)])
    with SimRoom(1, "codecs", script) as room, av.open(room.stream_url("cam"), timeout=10) as stream:
        kinds = {s.type: s.codec_context.name for s in stream.streams}
        assert kinds == {"video": "h264", "audio": "aac"}
        video = stream.streams.video[0]
        frames = []
        for frame in stream.decode(video):
            frames.append(frame)
            if len(frames) == 5:
                break
    assert (frames[0].width, frames[0].height) == (176, 144)
    assert frames[0].key_frame


def test_audio_only_anchor_publishes_no_video() -> None:
    script = SimScript(anchors=[SimAnchor(user_id="mic", leave=1.5, video=False)])
    with SimRoom(1, "mic", script) as room, av.open(room.stream_url("mic"), timeout=10) as stream:
        assert [s.type for s in stream.streams] == ["audio"]


def test_removing_the_recorder_ends_every_stream() -> None:
    script = SimScript(anchors=[SimAnchor(user_id="a", leave=30.0)], remove_recorder_at=1.0)
    with SimRoom(1, "removal", script) as room:
        started = time.monotonic()
        with av.open(room.stream_url("a"), timeout=10) as stream:
            last = 0.0
            for packet in stream.demux():
                if packet.dts is not None:
                    last = float(packet.dts * packet.time_base)
        took = time.monotonic() - started
        assert room.recorder_removed()
        assert room.publishers() == set()
    assert 0.8 <= last <= 1.5
    assert took < 5.0


def test_dismissed_room_has_ended() -> None:
    script = SimScript(anchors=[SimAnchor(user_id="a", leave=30.0)], dismiss_at=0.3)
    with SimRoom(1, "dismiss", script) as room:
        assert _wait_until(room.ended, 2.0)
        assert room.publishers() == set()


def test_unknown_and_absent_anchors() -> None:
    script = SimScript(anchors=[SimAnchor(user_id="later", join=20.0, leave=30.0)])
    with SimRoom(1, "absent", script) as room:
        with pytest.raises(RoomNotFoundError):
            room.stream_url("nobody")
        with pytest.raises(av.error.HTTPNotFoundError):
            av.open(room.stream_url("later"), timeout=5)


def test_running_rooms_are_found_by_app_and_room() -> None:
    with SimRoom(7, "found", demo_script()) as room:
        assert find_sim_room(7, "found") is room
        with pytest.raises(RoomNotFoundError):
            find_sim_room(8, "found")
    with pytest.raises(RoomNotFoundError):
        find_sim_room(7, "found")


@pytest.mark.parametrize(
    "script",
    [
        {"anchors": [{"user_id": "a", "join": 2, "leave": 1}]},
        {"anchors": [{"user_id": "a", "leave": 1, "video": False, "audio": False}]},
        {"anchors": [{"user_id": "a", "leave": 2}, {"user_id": "a", "join": 1, "leave": 3}]},
        {"anchors": [{"user_id": "bad id", "leave": 1}]},
        {"anchors": [{"user_id": "a", "leave": 1, "width": 321}]},
    ],
    ids=["leave-before-join", "nothing-published", "overlapping-appearances", "bad-user-id", "odd-width"],
)
def test_invalid_scripts_are_rejected(script: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimScript.model_validate(script)


def test_a_recorder_hanging_up_ends_the_stream_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    # A recording stopped early (Ctrl-C, a stop request) hangs up mid-stream: that is the
    # stream's end for the room, not an error with a traceback on the console.
    script = SimScript(anchors=[SimAnchor(user_id="a", leave=30.0)])
    with SimRoom(1400000001, "hangup", script) as room:
        room.begin()
        with av.open(room.stream_url("a"), timeout=10) as stream:
            for n, _ in enumerate(stream.demux()):
                if n >= 100:
                    break
        time.sleep(2.0)  # the room's next writes meet the closed connection
    assert "Traceback" not in capfd.readouterr().err
