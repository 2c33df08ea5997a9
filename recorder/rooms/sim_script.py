"""The script of a simulated room: who publishes what, when, and what happens to the room."""

from __future__ import annotations

import itertools
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recorder.request import USER_ID_CHARS

Seconds = Annotated[float, Field(ge=0)]


class SimAnchor(BaseModel):
    """One simulated anchor: a test pattern and a tone, published from `join` to `leave`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str = Field(pattern=USER_ID_CHARS.pattern, max_length=32)
    join: Seconds = 0.0
    leave: Seconds
    video: bool = True
    audio: bool = True
    width: int = Field(default=320, ge=16, le=1920, multiple_of=2)
    height: int = Field(default=240, ge=16, le=1080, multiple_of=2)
    fps: int = Field(default=15, ge=1, le=60)
    tone_hz: int = Field(default=440, ge=20, le=20000)

    @model_validator(mode="after")
    def _publishes_something(self) -> SimAnchor:
        if self.leave <= self.join:
            raise ValueError(f"anchor {self.user_id}: leave must come after join")
        if not (self.video or self.audio):
            raise ValueError(f"anchor {self.user_id}: publish video, audio or both")
        return self

    @property
    def duration(self) -> float:
        return self.leave - self.join


class SimScript(BaseModel):
    """Times are seconds from the recorder's first look at the room (`SimRoom.begin`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anchors: list[SimAnchor]
    remove_recorder_at: Seconds | None = None
    dismiss_at: Seconds | None = None

    @model_validator(mode="after")
    def _one_stream_per_anchor_at_a_time(self) -> SimScript:
        # An anchor may appear again (they left and came back), never twice at once.
        spans = sorted((a.user_id, a.join, a.leave) for a in self.anchors)
        for (user, _, leave), (next_user, join, _) in itertools.pairwise(spans):
            if user == next_user and join < leave:
                raise ValueError(f"anchor {user} would publish twice at once: their times overlap")
        return self


def demo_script() -> SimScript:
    """Two anchors for about 15 s; the second leaves early."""
    return SimScript(
        anchors=[
            SimAnchor(user_id="teacher", join=0.0, leave=15.0, tone_hz=440),
            SimAnchor(user_id="student_1", join=1.0, leave=9.0, tone_hz=660),
        ]
    )
