"""When recording starts and stops for a room: the original's stop rules, as plain logic.

The watcher is told who publishes now and which recordings are still running; it answers
which anchors need a new recording and whether the room is over for the recorder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from recorder.rooms.base import Room


@dataclass
class WatchStep:
    start: list[str] = field(default_factory=list)  # anchors to start recording now
    stop_reason: str | None = None  # set once: the room is over for the recorder


class RoomWatcher:
    def __init__(
        self,
        room: Room,
        max_idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        anchors: Iterable[str] | None = None,
    ) -> None:
        self._room = room
        # The request's Anchors: only they are recorded, and only they keep the room alive
        # (others on air do not hold a recording open that would record nobody).
        self._wanted = frozenset(anchors) if anchors is not None else None
        self._max_idle = max_idle_seconds
        self._clock = clock
        self._last_activity = clock()
        self._recording: set[str] = set()

    def finished(self, anchor: str) -> None:
        """The recording of `anchor` ended; if they publish again, that is a new recording."""
        self._recording.discard(anchor)

    def step(self, waiting: set[str] | frozenset[str] = frozenset()) -> WatchStep:
        """`waiting`: anchors whose recording only waits for their stream to come back; those
        do not keep the room going (the room's idle rule ends their wait)."""
        if self._room.recorder_removed():
            return WatchStep(stop_reason="the recorder was removed from the room")
        if self._room.ended():
            return WatchStep(stop_reason="the room was dismissed")
        publishing = self._room.publishers()
        if self._wanted is not None:
            publishing = publishing & self._wanted
        now = self._clock()
        if publishing or (self._recording - waiting):
            self._last_activity = now
        elif now - self._last_activity >= self._max_idle:
            return WatchStep(stop_reason=f"no anchor in the room for {self._max_idle:g} s")
        new = sorted(publishing - self._recording)
        self._recording.update(new)
        return WatchStep(start=new)
