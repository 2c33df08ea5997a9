"""TRTC room callbacks: the signature over the raw body, the event model, the roster's rules
(in any order of arrival) and its size bound. Bodies and Signs come from the TRTC stand-in's
`callback_request`, which prints and signs them as TRTC does."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from prefect.types import MAX_VARIABLE_VALUE_LENGTH, check_variable_value
from prefect.types.names import VariableName
from pydantic import SecretStr, TypeAdapter

from recorder.request import parse_request
from recorder.room_events import (
    ROSTER_KEEP_MS,
    ROSTER_MAX_CHARS,
    RoomEvent,
    RoomRoster,
    callback_sign,
    parse_room_event,
    request_room_key,
    room_key,
    verify_callback_sign,
)
from tests.trtc_standin import callback_request

APP = 1400000001
KEY = "CallbackKey0123456789abcdefABCDE"
T0 = 1_764_500_000_000  # ms


def info(room: int | str = 1234, at: int = T0, **fields: Any) -> dict[str, Any]:
    return {"RoomId": room, "EventTs": at // 1000, "EventMsTs": at, **fields}


def event_dict(
    kind: int, user: str | None = None, at: int = T0, room: int | str = 1234, **fields: Any
) -> dict[str, Any]:
    extra = {"UserId": user} if user is not None else {}
    return {
        "EventGroupId": 1 if kind < 200 else 2,
        "EventType": kind,
        "EventInfo": info(room, at, **extra, **fields),
    }


def event(kind: int, user: str | None = None, at: int = T0, **fields: Any) -> RoomEvent:
    """The event exactly as TRTC would send it, parsed from the signed body."""
    body, _ = callback_request(APP, event_dict(kind, user, at, **fields), KEY)
    return parse_room_event(body)


def enter(user: str, at: int, role: int = 20) -> RoomEvent:
    return event(103, user, at, Role=role, Reason=1, TerminalType=4, UserType=3)


def leave(user: str, at: int, reason: int = 1) -> RoomEvent:
    return event(104, user, at, Role=20, Reason=reason)


def roster_of(*events: RoomEvent) -> RoomRoster:
    roster = RoomRoster()
    for e in events:
        roster = roster.apply(e)
    return roster


# --- the signature ---------------------------------------------------------------------------


def test_the_sign_trtc_sends_verifies_over_the_raw_body() -> None:
    body, headers = callback_request(APP, event_dict(103, "teacher", Role=20), KEY)
    assert b"\n\t" in body  # pretty-printed, as TRTC prints it
    assert callback_sign(body, SecretStr(KEY)) == headers["Sign"]
    assert verify_callback_sign(body, headers["Sign"], SecretStr(KEY))


def test_a_tampered_body_a_wrong_key_or_no_sign_fails() -> None:
    body, headers = callback_request(APP, event_dict(103, "teacher", Role=20), KEY)
    sign = headers["Sign"]
    key = SecretStr(KEY)
    assert not verify_callback_sign(body.replace(b'"teacher"', b'"intruder"'), sign, key)
    assert not verify_callback_sign(body.replace(b"20", b"21"), sign, key)
    # The same JSON serialised again is other bytes: only the raw body verifies.
    assert json.loads(json.dumps(json.loads(body))) == json.loads(body)
    assert not verify_callback_sign(json.dumps(json.loads(body)).encode(), sign, key)
    assert not verify_callback_sign(body, sign, SecretStr(KEY + "x"))
    assert not verify_callback_sign(body, None, key)
    assert not verify_callback_sign(body, "", key)
    assert not verify_callback_sign(body, "not base64 ✗", key)  # no exception either
    unsigned_body, unsigned_headers = callback_request(APP, event_dict(103, "teacher", Role=20), None)
    assert "Sign" not in unsigned_headers
    assert not verify_callback_sign(unsigned_body, unsigned_headers.get("Sign"), key)


# --- the event -------------------------------------------------------------------------------


def test_an_event_keeps_its_room_kind_and_ignores_fields_it_does_not_use() -> None:
    as_int = event(103, "teacher", room=1234, Role=20, TerminalType=4, UserType=3, UniqueId=99)
    as_str = event(103, "teacher", room="1234", Role=20)
    assert as_int.EventInfo.RoomId == 1234 and isinstance(as_int.EventInfo.RoomId, int)
    assert as_str.EventInfo.RoomId == "1234" and isinstance(as_str.EventInfo.RoomId, str)
    assert room_key(APP, as_int.EventInfo.RoomId) != room_key(APP, as_str.EventInfo.RoomId)
    assert as_int.EventType == 103 and as_int.EventInfo.Role == 20 and as_int.EventInfo.UserId == "teacher"
    assert as_int.CallbackTs is not None and as_int.EventGroupId == 1


def test_the_event_time_is_event_ms_ts_else_event_ts_in_ms() -> None:
    assert event(102, at=T0 + 123).event_ms == T0 + 123
    body = json.dumps({"EventType": 102, "EventInfo": {"RoomId": 5, "EventTs": 1_764_500_001}}).encode()
    assert parse_room_event(body).event_ms == 1_764_500_001_000


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "body: is not JSON"),
        (b"[1, 2]", "body: "),
        (b'{"EventInfo": {"RoomId": 1, "EventTs": 1}}', "EventType: "),
        (b'{"EventType": "103", "EventInfo": {"RoomId": 1, "EventTs": 1}}', "EventType: "),
        (b'{"EventType": 102}', "EventInfo: "),
        (b'{"EventType": 102, "EventInfo": {"EventTs": 1}}', "EventInfo.RoomId: "),
        (b'{"EventType": 102, "EventInfo": {"RoomId": true, "EventTs": 1}}', "EventInfo.RoomId: "),
        (b'{"EventType": 102, "EventInfo": {"RoomId": 0, "EventTs": 1}}', "EventInfo.RoomId: "),
        (b'{"EventType": 102, "EventInfo": {"RoomId": "", "EventTs": 1}}', "EventInfo.RoomId: "),
        (b'{"EventType": 102, "EventInfo": {"RoomId": 1.5, "EventTs": 1}}', "EventInfo.RoomId: "),
        (b'{"EventType": 102, "EventInfo": {"RoomId": 1}}', "EventMsTs or EventTs is required"),
        (b'{"EventType": 102, "EventInfo": {"RoomId": 1, "EventMsTs": "soon"}}', "EventInfo.EventMsTs: "),
        (b'{"EventType": 103, "EventInfo": {"RoomId": 1, "EventTs": 1, "Role": 20}}', "EventInfo.UserId"),
        (
            b'{"EventType": 104, "EventInfo": {"RoomId": 1, "EventTs": 1, "UserId": "a", "Reason": "3"}}',
            "Reason",
        ),
    ],
)
def test_a_bad_body_is_a_value_error_naming_the_field(body: bytes, named: str) -> None:
    with pytest.raises(ValueError, match=r"^not a TRTC room callback: ") as raised:
        parse_room_event(body)
    assert named in str(raised.value)


# --- the roster ------------------------------------------------------------------------------


def test_anchors_are_who_entered_as_anchors_or_turned_media_on() -> None:
    roster = roster_of(
        enter("teacher", T0),
        enter("viewer", T0 + 1, role=21),  # audience: not an anchor
        event(201, "student", T0 + 2),  # video on: publishing, so an anchor
        event(203, "caller", T0 + 3),
        event(101, "teacher", T0 - 5),  # room created: nothing to the roster
    )
    assert roster.anchors == {"teacher": T0, "student": T0 + 2, "caller": T0 + 3}
    assert roster.dismissed_at is None and roster.removed == {}


def test_apply_returns_a_new_roster_and_keeps_the_newest_time() -> None:
    first = roster_of(enter("teacher", T0 + 10))
    second = first.apply(event(201, "teacher", T0 + 5))  # older: does not move the time back
    assert second.anchors == {"teacher": T0 + 10}
    third = second.apply(event(203, "teacher", T0 + 20))
    assert third.anchors == {"teacher": T0 + 20} and first.anchors == {"teacher": T0 + 10}


def test_leaving_for_any_reason_removes_the_anchor_and_media_off_does_not() -> None:
    base = roster_of(enter("a", T0), enter("b", T0), enter("c", T0), enter("d", T0))
    after = roster_of(
        *[enter(u, T0) for u in "abcd"],
        leave("a", T0 + 1, reason=1),
        leave("b", T0 + 1, reason=2),  # timeout
        leave("c", T0 + 1, reason=3),  # removed
        event(202, "d", T0 + 1),  # video off: still in the room
        event(204, "d", T0 + 2),  # audio off: still in the room
    )
    assert set(base.anchors) == set("abcd")
    assert after.anchors == {"d": T0}
    assert after.removed == {"c": T0 + 1}


def test_a_late_leave_older_than_the_anchors_newest_event_does_not_remove_them() -> None:
    roster = roster_of(enter("teacher", T0), leave("teacher", T0 + 10), enter("teacher", T0 + 20))
    # The 104 of the first visit arrives again (a retry), after the second 103.
    assert roster.apply(leave("teacher", T0 + 10)).anchors == {"teacher": T0 + 20}
    # A removal of the first visit, arriving late, is recorded but does not end the second.
    late_removal = roster.apply(leave("teacher", T0 + 15, reason=3))
    assert late_removal.anchors == {"teacher": T0 + 20} and late_removal.removed == {"teacher": T0 + 15}


def test_a_late_anchor_event_older_than_their_leave_does_not_bring_them_back() -> None:
    roster = roster_of(leave("teacher", T0 + 10), leave("student", T0 + 10, reason=3))
    late = roster.apply(event(201, "teacher", T0 + 5)).apply(enter("student", T0 + 5))
    assert late.anchors == {}
    assert late.apply(enter("teacher", T0 + 11)).anchors == {"teacher": T0 + 11}


def test_dismissal_clears_anchors_not_newer_than_it() -> None:
    roster = roster_of(enter("teacher", T0), enter("student", T0 + 5), event(102, at=T0 + 5))
    assert roster.anchors == {} and roster.dismissed_at == T0 + 5
    # A late event of the dismissed room does not bring anyone back; an older 102 changes nothing.
    assert roster.apply(event(203, "teacher", T0 + 4)).anchors == {}
    assert roster.apply(enter("teacher", T0 + 5)).anchors == {}  # the same ms: part of the ended room
    late = roster.apply(event(102, at=T0 + 1))
    assert late.anchors == {} and late.dismissed_at == T0 + 5
    # The room created again: its anchors count.
    again = late.apply(enter("teacher", T0 + 60))
    assert again.anchors == {"teacher": T0 + 60} and again.dismissed_at == T0 + 5
    # A dismissal older than an anchor's newest event leaves them.
    assert again.apply(event(102, at=T0 + 30)).anchors == {"teacher": T0 + 60}


def test_removed_keeps_each_users_newest_removal() -> None:
    roster = roster_of(leave("recorder", T0 + 10, reason=3), leave("recorder", T0 + 2, reason=3))
    assert roster.removed == {"recorder": T0 + 10}
    assert roster.apply(leave("recorder", T0 + 30, reason=3)).removed == {"recorder": T0 + 30}
    assert roster.apply(leave("recorder", T0 + 30, reason=1)).removed == {"recorder": T0 + 10}


def test_the_roster_is_the_same_whatever_order_the_events_arrive_in() -> None:
    # One room's story: teacher enters and publishes, student enters, the recorder robot is
    # removed, teacher leaves and comes back, the room is dismissed.
    story = [
        enter("teacher", T0),
        event(201, "teacher", T0 + 1),
        enter("student", T0 + 2),
        leave("recorder", T0 + 3, reason=3),
        leave("teacher", T0 + 4),
        enter("teacher", T0 + 6),
        event(102, at=T0 + 5),
    ]
    in_order = roster_of(*sorted(story, key=lambda e: e.event_ms))
    assert in_order.anchors == {"teacher": T0 + 6}
    assert in_order.removed == {"recorder": T0 + 3} and in_order.dismissed_at == T0 + 5
    for order in itertools.permutations(story):
        assert roster_of(*order) == in_order, [(e.EventType, e.EventInfo.UserId) for e in order]


# --- its size ----------------------------------------------------------------------------------


def test_the_size_limit_is_prefects() -> None:
    assert ROSTER_MAX_CHARS == MAX_VARIABLE_VALUE_LENGTH


def test_fifty_anchors_and_many_removals_fit_in_a_prefect_variable() -> None:
    anchors = [f"anchor_{i:02d}_" + "x" * 22 for i in range(50)]
    assert all(len(a) == 32 for a in anchors)
    roster = RoomRoster()
    for i, user in enumerate(anchors):
        roster = roster.apply(enter(user, T0 + i))
    for i in range(300):  # robots and visitors removed, one after another
        roster = roster.apply(leave(f"visitor_{i:03d}_" + "y" * 20, T0 + 1000 + i, reason=3))
        roster = roster.apply(leave(f"guest_{i:03d}_" + "z" * 22, T0 + 1000 + i, reason=1))
        assert roster.json_length() <= ROSTER_MAX_CHARS
    assert set(roster.anchors) == set(anchors)  # anchors go last
    # The newest removals are kept, the oldest dropped; Prefect's own check accepts it.
    assert f"visitor_299_{'y' * 20}" in roster.removed and f"visitor_000_{'y' * 20}" not in roster.removed
    assert len(roster.removed) > 10
    assert check_variable_value(roster.model_dump(mode="json")) is not None


def test_removals_and_leaves_a_day_older_than_the_newest_event_are_pruned() -> None:
    roster = roster_of(leave("old", T0, reason=3), leave("gone", T0), enter("teacher", T0 - 1000))
    assert roster.removed == {"old": T0} and roster.left == {"gone": T0}
    later = roster.apply(enter("student", T0 + ROSTER_KEEP_MS + 1))
    assert later.removed == {} and later.left == {}
    assert set(later.anchors) == {"teacher", "student"}  # anchors are in the room until they leave


def test_when_anchors_alone_are_too_big_the_oldest_go() -> None:
    roster = RoomRoster(anchors={f"user_{i:03d}_" + "a" * 23: T0 + i for i in range(120)})
    assert roster.json_length() > ROSTER_MAX_CHARS
    bounded = roster.bounded()
    assert bounded.json_length() <= ROSTER_MAX_CHARS
    kept = sorted(bounded.anchors.values())
    assert kept[-1] == T0 + 119 and kept[0] > T0  # the newest stay


# --- where it lives ---------------------------------------------------------------------------


def test_room_keys_are_prefect_variable_names_one_per_room_and_kind() -> None:
    names = TypeAdapter(VariableName)
    keys = [room_key(APP, 1234), room_key(APP, "1234"), room_key(APP + 1, 1234), room_key(APP, "Room A!")]
    for key in keys:
        assert names.validate_python(key) == key and key.startswith("trtc-room-")
    assert len(set(keys)) == len(keys)
    assert room_key(APP, 1234) == room_key(APP, 1234)  # stable: the gateway and the flow agree


def test_a_requests_room_key_is_its_rooms() -> None:
    base: dict[str, Any] = {
        "SdkAppId": APP,
        "UserId": "recorder_1",
        "UserSig": "sig",
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "susu-123456789"},
    }
    assert request_room_key(parse_request(base | {"RoomId": 1234})) == room_key(APP, 1234)
    assert request_room_key(parse_request(base | {"StrRoomId": "1234"})) == room_key(APP, "1234")
    both = parse_request(base | {"RoomId": 1234, "StrRoomId": "other"})
    assert request_room_key(both) == room_key(APP, 1234)  # RoomId wins
