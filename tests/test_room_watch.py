"""RoomWatcher over a scripted in-memory room and a clock the test advances."""

from __future__ import annotations

import pytest

from recorder.room_watch import RoomWatcher
from recorder.rooms.base import Room

MAX_IDLE = 10.0


class ScriptedRoom:
    """A room whose publishers and end flags the test sets directly."""

    def __init__(self, *publishers: str) -> None:
        self.publishing: set[str] = set(publishers)
        self.dismissed = False
        self.removed = False

    def publishers(self) -> set[str]:
        return set(self.publishing)

    def stream_url(self, anchor: str) -> str:
        return f"rtmp://127.0.0.1/live/{anchor}"

    def ended(self) -> bool:
        return self.dismissed

    def recorder_removed(self) -> bool:
        return self.removed


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def room() -> ScriptedRoom:
    return ScriptedRoom()


@pytest.fixture
def watcher(room: ScriptedRoom, clock: FakeClock) -> RoomWatcher:
    as_room: Room = room  # ScriptedRoom satisfies the protocol
    return RoomWatcher(as_room, MAX_IDLE, clock=clock)


def test_new_anchors_are_started_once_and_sorted(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.publishing = {"zoe", "alice", "mike"}

    first = watcher.step()
    second = watcher.step()

    assert first.start == ["alice", "mike", "zoe"]
    assert first.stop_reason is None
    assert second.start == []
    assert second.stop_reason is None


def test_only_newcomers_are_started(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.publishing = {"bob"}
    assert watcher.step().start == ["bob"]

    room.publishing = {"bob", "carol", "anna"}

    assert watcher.step().start == ["anna", "carol"]


def test_empty_room_starts_nothing(watcher: RoomWatcher) -> None:
    step = watcher.step()

    assert step.start == []
    assert step.stop_reason is None


def test_finished_anchor_still_publishing_gets_a_new_take(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.publishing = {"alice", "bob"}
    assert watcher.step().start == ["alice", "bob"]

    watcher.finished("alice")

    assert watcher.step().start == ["alice"]
    assert watcher.step().start == []


def test_finished_anchor_publishing_again_later_gets_a_new_take(
    room: ScriptedRoom, watcher: RoomWatcher, clock: FakeClock
) -> None:
    room.publishing = {"alice"}
    assert watcher.step().start == ["alice"]

    room.publishing = set()
    watcher.finished("alice")
    clock.advance(1)
    assert watcher.step().start == []

    room.publishing = {"alice"}
    clock.advance(1)
    assert watcher.step().start == ["alice"]


def test_anchor_not_finished_is_not_started_again(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.publishing = {"alice"}
    assert watcher.step().start == ["alice"]

    room.publishing = set()  # stopped publishing, but the recording has not ended yet
    assert watcher.step().start == []
    room.publishing = {"alice"}

    assert watcher.step().start == []


def test_empty_room_stops_after_max_idle_and_not_before(watcher: RoomWatcher, clock: FakeClock) -> None:
    clock.advance(MAX_IDLE - 0.1)
    early = watcher.step()
    clock.advance(0.1)
    due = watcher.step()

    assert early.stop_reason is None
    assert due.stop_reason is not None
    assert "10 s" in due.stop_reason
    assert due.start == []


def test_idle_time_counts_from_the_last_activity(
    room: ScriptedRoom, watcher: RoomWatcher, clock: FakeClock
) -> None:
    room.publishing = {"alice"}
    clock.advance(MAX_IDLE * 3)
    assert watcher.step().stop_reason is None  # someone publishes: never idle

    room.publishing = set()
    watcher.finished("alice")
    clock.advance(MAX_IDLE - 0.1)
    assert watcher.step().stop_reason is None
    clock.advance(0.1)

    reason = watcher.step().stop_reason
    assert reason is not None
    assert "10 s" in reason


def test_running_recording_keeps_the_room_alive(
    room: ScriptedRoom, watcher: RoomWatcher, clock: FakeClock
) -> None:
    room.publishing = {"alice"}
    assert watcher.step().start == ["alice"]
    room.publishing = set()

    clock.advance(MAX_IDLE * 5)
    assert watcher.step().stop_reason is None  # alice's recording is still running

    watcher.finished("alice")
    clock.advance(MAX_IDLE - 0.1)
    assert watcher.step().stop_reason is None
    clock.advance(0.1)
    assert watcher.step().stop_reason is not None


def test_fractional_max_idle_is_named_in_the_reason(room: ScriptedRoom, clock: FakeClock) -> None:
    watcher = RoomWatcher(room, 2.5, clock=clock)
    clock.advance(2.5)

    reason = watcher.step().stop_reason

    assert reason is not None
    assert "2.5 s" in reason


def test_removal_stops_the_watch(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.publishing = {"alice"}
    room.removed = True

    step = watcher.step()

    assert step.stop_reason is not None
    assert "removed" in step.stop_reason
    assert step.start == []


def test_dismissal_stops_the_watch(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.publishing = {"alice"}
    room.dismissed = True

    step = watcher.step()

    assert step.stop_reason is not None
    assert "dismissed" in step.stop_reason
    assert step.start == []


def test_removal_wins_over_dismissal(room: ScriptedRoom, watcher: RoomWatcher) -> None:
    room.removed = True
    room.dismissed = True

    reason = watcher.step().stop_reason

    assert reason is not None
    assert "removed" in reason
    assert "dismissed" not in reason


def test_dismissal_while_recording_stops_at_once(
    room: ScriptedRoom, watcher: RoomWatcher, clock: FakeClock
) -> None:
    room.publishing = {"alice"}
    assert watcher.step().start == ["alice"]

    room.dismissed = True
    clock.advance(0.5)

    reason = watcher.step().stop_reason
    assert reason is not None
    assert "dismissed" in reason


def test_only_the_listed_anchors_are_recorded_and_keep_the_room_going(
    room: ScriptedRoom, clock: FakeClock
) -> None:
    watcher = RoomWatcher(room, MAX_IDLE, clock=clock, anchors=["teacher"])
    room.publishing = {"teacher", "visitor"}
    assert watcher.step().start == ["teacher"]
    watcher.finished("teacher")
    room.publishing = {"visitor"}  # someone not listed stays on air
    clock.advance(MAX_IDLE)
    step = watcher.step()
    assert step.start == []
    assert step.stop_reason == f"no anchor in the room for {MAX_IDLE:g} s"


def test_a_recording_waiting_for_its_stream_to_return_does_not_keep_the_room_going(
    room: ScriptedRoom, watcher: RoomWatcher, clock: FakeClock
) -> None:
    room.publishing = {"alice"}
    assert watcher.step().start == ["alice"]
    room.publishing = set()  # alice's stream ended; her recording waits for it to come back

    assert watcher.step({"alice"}).stop_reason is None
    clock.advance(MAX_IDLE)
    assert watcher.step({"alice"}).stop_reason == f"no anchor in the room for {MAX_IDLE:g} s"
