"""TRTC's room and media callbacks, and the per-room roster they add up to.

TRTC POSTs one callback per event ("房间与媒体回调",
https://cloud.tencent.com/document/product/647/51586): headers `Sign` (base64 of
HMAC-SHA256 over the raw body, keyed with the console's callback key) and `SdkAppId`; body
{EventGroupId, EventType, CallbackTs, EventInfo{RoomId, EventTs, EventMsTs, UserId, Role,
Reason, ...}}. RoomId is a JSON number for an integer room and a string for a string room:
integer room 1234 and string room "1234" are different rooms, so the kind is kept.

The roster is what the callbacks said about one room: who is an anchor, when the room was
last dismissed, who was removed. TRTC does not promise order (it retries a failed callback
10 s later while newer ones get through), so every entry carries the time of the event
that set it and an older event never undoes a newer one. It is small enough for a Prefect
Variable (this module does not import Prefect; flows/room_roster.py keeps it there).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from recorder.request import RecordingRequest

EVENT_ROOM_CREATED = 101
EVENT_ROOM_DISMISSED = 102
EVENT_USER_ENTERED = 103
EVENT_USER_LEFT = 104
EVENT_VIDEO_ON = 201
EVENT_VIDEO_OFF = 202
EVENT_AUDIO_ON = 203
EVENT_AUDIO_OFF = 204
# The events that change a roster; TRTC sends others (101, 105, 202, 204, 205, ...) too.
ROSTER_EVENTS = frozenset(
    {EVENT_ROOM_DISMISSED, EVENT_USER_ENTERED, EVENT_USER_LEFT, EVENT_VIDEO_ON, EVENT_AUDIO_ON}
)
# Events about one user: they name the user (EventInfo.UserId).
USER_EVENTS = frozenset({EVENT_USER_ENTERED, EVENT_USER_LEFT, 105, 201, 202, 203, 204, 205, 206})

ROLE_ANCHOR = 20
ROLE_AUDIENCE = 21
REASON_REMOVED = 3  # of a 104: removed from the room (RemoveUser); 1 is normal, 2 timeout

# Prefect Variables hold at most this many characters of JSON
# (prefect.types.MAX_VARIABLE_VALUE_LENGTH; tests check the two agree).
ROSTER_MAX_CHARS = 5000
# A leave or removal older than this, next to the newest event, no longer guards against a
# late callback (TRTC gives up retrying after a minute) and goes first when space is short.
ROSTER_KEEP_MS = 24 * 3600 * 1000

ROOM_KEY_PREFIX = "trtc-room-"
# 128 bits of sha256: no two rooms share a Variable by chance.
_ROOM_KEY_HEX = 32


# --- the signature ---------------------------------------------------------------------------


def callback_sign(body: bytes, key: SecretStr) -> str:
    """TRTC's Sign of a callback body: base64(HMAC-SHA256(key, body))."""
    digest = hmac.new(key.get_secret_value().encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_callback_sign(body: bytes, sign: str | None, key: SecretStr) -> bool:
    """Whether `sign` is TRTC's Sign of exactly these body bytes.

    Over the raw body: TRTC's bodies are pretty-printed, so a body parsed and serialised
    again would not match. Compared in constant time so timing tells nothing of the key."""
    if not sign:
        return False
    return hmac.compare_digest(callback_sign(body, key).encode(), sign.encode("utf-8", "replace"))


# --- the callback ----------------------------------------------------------------------------


class RoomEventInfo(BaseModel):
    """EventInfo: the room, when, and for user events who and in which role."""

    # TRTC adds fields over time (UniqueId, TerminalType, UserType, ...): ignore what we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)

    RoomId: int | str
    EventTs: int | None = Field(default=None, ge=0, strict=True)
    EventMsTs: int | None = Field(default=None, ge=0, strict=True)
    UserId: str | None = None
    Role: int | None = Field(default=None, strict=True)
    Reason: int | None = Field(default=None, strict=True)

    @field_validator("RoomId", mode="before")
    @classmethod
    def _room_id(cls, v: Any) -> Any:
        # Checked by hand: a union would let "1234" become 1234 or the reverse, and those
        # are two rooms. A bool is a JSON true/false, not a room.
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            return v
        if isinstance(v, str) and v:
            return v
        raise ValueError("must be a positive integer (an integer room) or a non-empty string (a string room)")

    @model_validator(mode="after")
    def _has_time(self) -> RoomEventInfo:
        if self.EventMsTs is None and self.EventTs is None:
            raise ValueError("EventMsTs or EventTs is required: the roster orders events by them")
        return self

    @property
    def event_ms(self) -> int:
        """When the event happened, in ms since the epoch (EventMsTs, else EventTs in ms)."""
        if self.EventMsTs is not None:
            return self.EventMsTs
        assert self.EventTs is not None  # _has_time
        return self.EventTs * 1000


class RoomEvent(BaseModel):
    """One room (EventGroupId 1) or media (2) callback."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    EventGroupId: int | None = Field(default=None, strict=True)
    EventType: int = Field(strict=True)
    CallbackTs: int | None = Field(default=None, strict=True)
    EventInfo: RoomEventInfo

    @model_validator(mode="after")
    def _user_named(self) -> RoomEvent:
        if self.EventType in USER_EVENTS and not self.EventInfo.UserId:
            raise ValueError(f"EventInfo.UserId is required for event type {self.EventType}")
        return self

    @property
    def event_ms(self) -> int:
        return self.EventInfo.event_ms


def _describe(error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "json_invalid":
        return "body: is not JSON"
    message = error["msg"].removeprefix("Value error, ")
    if not loc and error["type"] != "value_error":
        loc = "body"  # the body as a whole: not an object
    # Input values are not echoed: the body is whatever reached an open endpoint.
    return f"{loc}: {message}" if loc else message


def parse_room_event(body: bytes) -> RoomEvent:
    """A callback body as a `RoomEvent`; ValueError naming each bad field."""
    try:
        return RoomEvent.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(
            "not a TRTC room callback: " + "; ".join(_describe(e) for e in exc.errors())
        ) from None


# --- the roster ------------------------------------------------------------------------------


class RoomRoster(BaseModel):
    """What the callbacks said about one room; every time is in ms since the epoch.

    anchors: UserId -> the newest event saying they are an anchor in the room (103 as an
        anchor, 201 video on, 203 audio on).
    dismissed_at: the newest 102 (room dismissed).
    removed: UserId -> their newest 104 with Reason 3 (removed from the room).
    left: UserId -> their newest other 104, when newer than their removal. Only so that a
        late anchor event older than the leave does not bring them back.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    anchors: dict[str, int] = Field(default_factory=dict)
    dismissed_at: int | None = None
    removed: dict[str, int] = Field(default_factory=dict)
    left: dict[str, int] = Field(default_factory=dict)

    def last_left(self, user: str) -> int | None:
        """The newest 104 of `user`, of any reason, that the roster still holds."""
        times = [t for t in (self.left.get(user), self.removed.get(user)) if t is not None]
        return max(times) if times else None

    def apply(self, event: RoomEvent) -> RoomRoster:
        """A new roster: this one with `event` applied, in whatever order events arrive."""
        at, user, info = event.event_ms, event.EventInfo.UserId, event.EventInfo
        anchors, removed, left = dict(self.anchors), dict(self.removed), dict(self.left)
        dismissed_at = self.dismissed_at
        kind = event.EventType
        if kind == EVENT_ROOM_DISMISSED:
            dismissed_at = at if dismissed_at is None else max(dismissed_at, at)
            # Ties go to the dismissal: an anchor event of the same ms was part of the room that ended.
            anchors = {u: t for u, t in anchors.items() if t > dismissed_at}
        elif user and kind == EVENT_USER_LEFT:
            if info.Reason == REASON_REMOVED:
                removed[user] = max(removed.get(user, at), at)
                if left.get(user, at) <= removed[user]:
                    left.pop(user, None)  # the removal covers it
            elif at > removed.get(user, -1):
                left[user] = max(left.get(user, at), at)
            # Ties go to the leave: it is the later state of one moment.
            if anchors.get(user, at) <= at:
                anchors.pop(user, None)
        elif user and _says_anchor(event):
            gone = self.last_left(user)
            if (gone is None or at > gone) and (dismissed_at is None or at > dismissed_at):
                anchors[user] = max(anchors.get(user, at), at)
        # 202/204 (video or audio off) leave the anchor in the room; 101, 105 and others change nothing here.
        roster = RoomRoster(anchors=anchors, dismissed_at=dismissed_at, removed=removed, left=left)
        return roster.bounded(newest=at)

    def newest_ms(self) -> int | None:
        times = [*self.anchors.values(), *self.removed.values(), *self.left.values()]
        if self.dismissed_at is not None:
            times.append(self.dismissed_at)
        return max(times) if times else None

    def json_length(self) -> int:
        """Its length as a Prefect Variable value: compact JSON in UTF-8 bytes, as Prefect counts it."""
        return len(
            json.dumps(self.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False).encode()
        )

    def bounded(self, newest: int | None = None, limit: int = ROSTER_MAX_CHARS) -> RoomRoster:
        """This roster within `limit` characters of JSON.

        Leaves and removals older than ROSTER_KEEP_MS before the newest event go first; then,
        while still too big, the oldest leaves, the oldest removals and last the oldest
        anchors (50 anchors on air of 32-character UserIds take about half the limit)."""
        times = [t for t in (newest, self.newest_ms()) if t is not None]
        if not times:
            return self  # empty
        horizon = max(times) - ROSTER_KEEP_MS
        removed = {u: t for u, t in self.removed.items() if t >= horizon}
        left = {u: t for u, t in self.left.items() if t >= horizon}
        roster = self.model_copy(update={"removed": removed, "left": left})
        for field in ("left", "removed", "anchors"):
            if roster.json_length() <= limit:
                break
            entries: dict[str, int] = dict(getattr(roster, field))
            for user in sorted(entries, key=lambda u: (entries[u], u)):
                del entries[user]
                roster = roster.model_copy(update={field: dict(entries)})
                if roster.json_length() <= limit:
                    break
        return roster


def _says_anchor(event: RoomEvent) -> bool:
    if event.EventType == EVENT_USER_ENTERED:
        return event.EventInfo.Role == ROLE_ANCHOR
    # Only an anchor can publish: whoever turns video or audio on is one.
    return event.EventType in (EVENT_VIDEO_ON, EVENT_AUDIO_ON)


# --- where a room's roster lives ---------------------------------------------------------------


def room_key(sdk_app_id: int, room: int | str) -> str:
    """A stable name for one room of one application, valid as a Prefect Variable name
    (lowercase letters, digits, '-' and '_', at most 255 characters).

    Hashed, since string room ids hold characters a Variable name may not; the room's kind
    is part of the hash, since integer room 1234 and string room "1234" are two rooms."""
    if isinstance(room, bool) or not isinstance(room, (int, str)):
        raise TypeError(f"a room is an int or a str, not {type(room).__name__}")
    kind = "int" if isinstance(room, int) else "str"
    identity = f"{sdk_app_id}/{kind}/{room}"
    return ROOM_KEY_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:_ROOM_KEY_HEX]


def request_room_key(request: RecordingRequest) -> str:
    """The room_key of the room a request records (RoomId wins when both are given)."""
    room: int | str = request.RoomId if request.RoomId is not None else str(request.StrRoomId)
    return room_key(request.SdkAppId, room)
