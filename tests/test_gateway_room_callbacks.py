"""POST /trtc/callback: TRTC's room callbacks, signed and printed as TRTC sends them (the
stand-in's `callback_request`), through the real gateway into a room roster kept in a real
(temporary) Prefect API, read back the way a recording's flow run reads it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from pydantic import SecretStr

from deployments.gateway import TRTC_CALLBACK_PATH, create_app
from flows.room_roster import read_roster, record_room_event
from recorder.room_events import RoomRoster, callback_sign, parse_room_event, room_key
from recorder.settings import RecorderSettings
from tests.trtc_standin import callback_request

APP = 1400000002
CALLBACK_KEY = "RoomCallbackKEY0never0logged0123"
API_KEY = "gateway-key-room-callbacks"
T0 = 1_764_600_000_000  # ms

_rooms = iter(range(7001, 8000))


@pytest.fixture
def room() -> int:
    """A room of its own for each test: the Prefect API is shared by the session."""
    return next(_rooms)


@pytest.fixture
def settings(prefect_api: None) -> RecorderSettings:
    # API keys are set, and TRTC sends none: the callback endpoint must not ask for them.
    return RecorderSettings(trtc_callback_key=SecretStr(CALLBACK_KEY), api_keys=SecretStr(API_KEY))


@pytest.fixture
def gateway(settings: RecorderSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def event(kind: int, room: int | str, user: str | None = None, at: int = T0, **fields: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"RoomId": room, "EventTs": at // 1000, "EventMsTs": at, **fields}
    if user is not None:
        info["UserId"] = user
    return {"EventGroupId": 1 if kind < 200 else 2, "EventType": kind, "EventInfo": info}


def post(gateway: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return gateway.post(TRTC_CALLBACK_PATH, content=body, headers=headers)


def send(gateway: TestClient, payload: dict[str, Any], key: str | None = CALLBACK_KEY, app: int = APP) -> Any:
    body, headers = callback_request(app, payload, key)
    return post(gateway, body, headers)


def roster(room: int | str, app: int = APP) -> RoomRoster:
    with get_client(sync_client=True) as client:
        return read_roster(client, app, room)


def test_a_signed_anchor_entry_puts_the_anchor_on_the_roster(gateway: TestClient, room: int) -> None:
    assert roster(room) == RoomRoster()  # no Variable yet: an empty roster
    answer = send(gateway, event(103, room, "teacher", T0, Role=20, Reason=1, TerminalType=3, UserType=3))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"code": 0, "EventType": 103, "Recorded": True}
    assert roster(room).anchors == {"teacher": T0}
    # The media events that come with it, and an audience member who is not an anchor.
    assert send(gateway, event(201, room, "teacher", T0 + 40)).status_code == 200
    assert send(gateway, event(103, room, "viewer", T0 + 50, Role=21, Reason=1)).status_code == 200
    assert roster(room).anchors == {"teacher": T0 + 40}
    # The room is one application's: the same RoomId of another SdkAppId is another room.
    assert roster(room, app=APP + 1) == RoomRoster()


def test_integer_and_string_rooms_of_the_same_digits_are_two_rooms(gateway: TestClient, room: int) -> None:
    assert send(gateway, event(103, room, "in_int_room", Role=20)).status_code == 200
    assert send(gateway, event(103, str(room), "in_str_room", Role=20)).status_code == 200
    assert roster(room).anchors == {"in_int_room": T0}
    assert roster(str(room)).anchors == {"in_str_room": T0}


def test_unsigned_wrongly_signed_or_tampered_callbacks_are_401_and_change_nothing(
    gateway: TestClient, room: int, caplog: pytest.LogCaptureFixture
) -> None:
    assert send(gateway, event(103, room, "teacher", Role=20)).status_code == 200
    before = roster(room)

    intruder = event(103, room, "intruder", T0 + 1, Role=20)
    leaving = event(104, room, "teacher", T0 + 1, Role=20, Reason=3)
    good_body, good_headers = callback_request(APP, intruder, CALLBACK_KEY)
    tampered = good_body.replace(b'"intruder"', b'"impostor"')
    caplog.set_level(logging.DEBUG)
    refused = [
        send(gateway, intruder, key=None),  # no Sign header at all
        send(gateway, leaving, key="SomeOtherKey"),
        post(gateway, tampered, good_headers),
        post(gateway, good_body, good_headers | {"Sign": ""}),
    ]
    for answer in refused:
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "missing or wrong Sign"}
    assert roster(room) == before
    assert CALLBACK_KEY not in caplog.text and good_headers["Sign"] not in caplog.text
    # Nor is the API key the way in: the Sign is the only authentication here.
    unsigned, headers = callback_request(APP, intruder, None)
    assert post(gateway, unsigned, headers | {"Authorization": f"Bearer {API_KEY}"}).status_code == 401
    assert roster(room) == before


def test_dismissal_sets_dismissed_at_and_clears_the_anchors(gateway: TestClient, room: int) -> None:
    send(gateway, event(103, room, "teacher", T0, Role=20))
    answer = send(gateway, event(102, room, at=T0 + 5000))
    assert answer.json() == {"code": 0, "EventType": 102, "Recorded": True}
    found = roster(room)
    assert found.dismissed_at == T0 + 5000 and found.anchors == {}


def test_a_removal_sets_removed_and_a_late_entry_does_not_undo_it(gateway: TestClient, room: int) -> None:
    send(gateway, event(103, room, "recorder_1", T0, Role=20))
    send(gateway, event(103, room, "teacher", T0, Role=20))
    assert send(gateway, event(104, room, "recorder_1", T0 + 3000, Role=20, Reason=3)).status_code == 200
    # TRTC retries a failed callback later: an older 103 arriving now changes nothing.
    send(gateway, event(103, room, "recorder_1", T0 + 1000, Role=20))
    found = roster(room)
    assert found.removed == {"recorder_1": T0 + 3000}
    assert found.anchors == {"teacher": T0}


def test_other_events_are_answered_200_and_ignored(gateway: TestClient, room: int) -> None:
    send(gateway, event(103, room, "teacher", T0, Role=20))
    before = roster(room)
    for kind in (101, 105, 202, 204, 205, 206, 301):
        answer = send(gateway, event(kind, room, "teacher", T0 + 10, Role=21))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"code": 0, "EventType": kind, "Recorded": False}
    assert roster(room) == before


def test_a_bad_sdk_app_id_header_or_body_is_400(gateway: TestClient, room: int) -> None:
    body, headers = callback_request(APP, event(103, room, "teacher", Role=20), CALLBACK_KEY)
    del headers["SdkAppId"]
    for app_id in (None, "", "abc", "-5", "0", "1.5", "99999999999"):
        sent = headers if app_id is None else headers | {"SdkAppId": app_id}
        answer = post(gateway, body, sent)
        assert answer.status_code == 400, (app_id, answer.text)
        assert "SdkAppId" in answer.json()["error"]
    bad_room = send(gateway, event(103, True, "teacher", Role=20))  # true is not a room
    assert bad_room.status_code == 400 and "EventInfo.RoomId" in bad_room.json()["error"]
    no_user = send(gateway, event(104, room, None, Reason=3))
    assert no_user.status_code == 400 and "EventInfo.UserId" in no_user.json()["error"]
    not_json, headers = b"{nope", {"SdkAppId": str(APP)}
    answer = post(gateway, not_json, headers | {"Sign": callback_sign(not_json, SecretStr(CALLBACK_KEY))})
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    assert roster(room) == RoomRoster()


def test_an_oversized_body_is_413(gateway: TestClient, room: int) -> None:
    payload = event(103, room, "teacher", Role=20, Padding="x" * 70_000)
    assert send(gateway, payload).status_code == 413
    assert roster(room) == RoomRoster()


def test_without_a_callback_key_callbacks_are_503_naming_the_setting(prefect_api: None, room: int) -> None:
    for key in (None, SecretStr("")):  # an empty key would let anyone sign
        with TestClient(create_app(RecorderSettings(trtc_callback_key=key))) as client:
            answer = send(client, event(103, room, "teacher", Role=20), key="")
        assert answer.status_code == 503
        assert "RECORDER_TRTC_CALLBACK_KEY" in answer.json()["error"]
    assert roster(room) == RoomRoster()


def test_simultaneous_events_of_one_room_are_all_kept(prefect_api: None, room: int) -> None:
    """TRTC sends an anchor's 103, 201 and 203 together: concurrent updates of one Variable
    in one process must not lose any of them."""
    anchors = [f"anchor_{i:02d}" for i in range(12)]
    events = [
        parse_room_event(callback_request(APP, event(kind, room, user, T0 + i, Role=20), CALLBACK_KEY)[0])
        for i, user in enumerate(anchors)
        for kind in (103, 201)
    ]

    async def deliver() -> list[RoomRoster]:
        async with get_client() as client:
            return await asyncio.gather(*(record_room_event(client, APP, e) for e in events))

    answers = asyncio.run(deliver())
    assert set(answers[-1].anchors) <= set(anchors)
    assert set(roster(room).anchors) == set(anchors)
    # And they are in the Variable the flow reads, under the room's name.
    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(room_key(APP, room))
    assert variable is not None and isinstance(variable.value, dict)
    assert set(variable.value["anchors"]) == set(anchors)
