"""The `trtc` room on its own (no Prefect): relays started through the real SDK at the TRTC
API stand-in, pushed into a real nginx-rtmp, found on its statistics page and pulled with PyAV."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from pydantic import SecretStr

from recorder.request import RecordingRequest
from recorder.room_events import RoomRoster
from recorder.rooms import RoomNotFoundError, open_room
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.rooms.trtc import RelayJournal, TrtcRoom, stop_relays
from recorder.settings import RecorderSettings
from tests.nginx_rtmp import NginxRtmp
from tests.trtc_standin import TrtcStandIn

SECRET_ID = "AKIDtrtcroom000000000000000000000"
SECRET_KEY = "trtc-room-secret-NEVER-SHOWN-77aa"
SDK_KEY = "sdk-secret-key-NEVER-SHOWN-0c0c"
USER_SIG_OWNER = "recorder_1"
APP = 1400000321

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    with NginxRtmp(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture
def trtc() -> Iterator[TrtcStandIn]:
    with TrtcStandIn(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, sdk_app_id=APP, usersig_key=SDK_KEY
    ) as standin:
        yield standin


def settings_for(trtc: TrtcStandIn, nginx: NginxRtmp, **changes: object) -> RecorderSettings:
    values: dict[str, object] = {
        "room_backend": "trtc",
        "rtmp_url": nginx.rtmp_url,
        "rtmp_stat_url": nginx.stat_url,
        "rtmp_stream_secret": SecretStr("ingest-secret"),
        "trtc_endpoint": trtc.endpoint,
        "trtc_scheme": "http",
        "trtc_secret_id": SECRET_ID,
        "trtc_secret_key": SecretStr(SECRET_KEY),
        "trtc_sdk_secret_key": SecretStr(SDK_KEY),
    }
    values.update(changes)
    return RecorderSettings.model_validate(values)


def request_for(room: int | str, **fields: Any) -> RecordingRequest:
    from recorder.usersig import generate_usersig

    room_field = {"RoomId": room} if isinstance(room, int) else {"StrRoomId": room}
    return RecordingRequest.model_validate(
        {
            "SdkAppId": APP,
            **room_field,
            "UserId": USER_SIG_OWNER,
            "UserSig": generate_usersig(APP, SDK_KEY, USER_SIG_OWNER),
            "CosConfig": {"Region": "ap-guangzhou", "Bucket": "b-1250000000"},
            "MaxIdleTime": 5,
            "Mode": "02",
            **fields,
        }
    )


def wait_for(what: str, condition: Callable[[], Any], seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def roster(anchors: dict[str, int] | None = None, **fields: Any) -> RoomRoster:
    return RoomRoster(anchors=anchors or {}, **fields)


def test_listed_anchors_are_relayed_found_on_the_ingest_and_stopped(
    trtc: TrtcStandIn, nginx: NginxRtmp, tmp_path: Path
) -> None:
    trtc.add_room("3001", SimScript(anchors=[SimAnchor(user_id="teacher", leave=60)]))
    journal = tmp_path / "relays.json"
    room = open_room(
        settings_for(trtc, nginx),
        APP,
        "3001",
        request=request_for(3001, Anchors=["teacher"]),
        relay_journal=journal,
    )
    assert isinstance(room, TrtcRoom)
    assert wait_for("the relay on the ingest", room.publishers) == {"teacher"}
    [relay] = trtc.relays.values()
    assert relay.agent == USER_SIG_OWNER  # the request's robot relays the first anchor
    assert RelayJournal(journal).read()[0].task_id == relay.task_id

    with av.open(room.stream_url("teacher"), timeout=10) as pulled:
        kinds = {s.type for s in pulled.streams}
        frames = sum(1 for _ in zip(range(20), pulled.decode(video=0), strict=False))
    assert kinds == {"video", "audio"} and frames == 20

    assert room.close() == []
    assert relay.stopped and relay.stop_reason == "stopped by StopPublishCdnStream"
    assert all(r.stopped for r in RelayJournal(journal).read())


def test_anchors_named_by_the_room_callbacks_are_relayed_each_by_its_own_robot(
    trtc: TrtcStandIn, nginx: NginxRtmp
) -> None:
    anchors = [SimAnchor(user_id="alice", leave=60), SimAnchor(user_id="bob", leave=60)]
    trtc.add_room("class 9", SimScript(anchors=anchors), str_room=True)
    room = TrtcRoom(request_for("class 9"), settings_for(trtc, nginx)).check()
    room.update_roster(roster())
    assert room.publishers() == set() and not trtc.relays  # nobody named yet: nothing relayed

    room.update_roster(roster({"alice": 1, "bob": 2, USER_SIG_OWNER: 3}))
    assert wait_for("both relays on the ingest", lambda: room.publishers() == {"alice", "bob"})
    robots = {r.anchor: r.agent for r in trtc.relays.values()}
    # The stand-in verified each robot's UserSig (usersig_key): the second one the recorder signed.
    assert robots == {"alice": USER_SIG_OWNER, "bob": f"{USER_SIG_OWNER}_r2"}
    assert [c.params["RoomIdType"] for c in trtc.calls if c.action == "StartPublishCdnStream"] == [1, 1]
    room.close()
    assert all(r.stopped for r in trtc.relays.values())


def test_a_further_anchor_without_the_sdk_key_fails_with_a_message_saying_what_to_set(
    trtc: TrtcStandIn, nginx: NginxRtmp
) -> None:
    anchors = [SimAnchor(user_id="alice", leave=60), SimAnchor(user_id="bob", leave=60)]
    trtc.add_room("3003", SimScript(anchors=anchors))
    room = TrtcRoom(
        request_for(3003, Anchors=["alice", "bob"]), settings_for(trtc, nginx, trtc_sdk_secret_key=None)
    )
    assert wait_for("alice on the ingest", lambda: room.publishers() == {"alice"})
    assert list(room.failures()) == ["bob"]
    assert "RECORDER_TRTC_SDK_SECRET_KEY" in room.failures()["bob"]
    assert room.failures()["bob"].startswith("recording failed: ")
    room.close()


def test_a_refused_relay_is_a_failure_with_trtcs_code_and_a_busy_api_is_asked_again(
    trtc: TrtcStandIn, nginx: NginxRtmp
) -> None:
    anchors = [SimAnchor(user_id="alice", leave=60), SimAnchor(user_id="bob", leave=60)]
    trtc.add_room("3004", SimScript(anchors=anchors))
    trtc.fail_next("StartPublishCdnStream", "InternalError", "busy, try again")
    trtc.fail_next("StartPublishCdnStream", "UnauthorizedOperation.SdkAppId", "No permission.")
    room = TrtcRoom(request_for(3004, Anchors=["alice", "bob"]), settings_for(trtc, nginx))
    # alice: InternalError, retried 1 s later; bob: refused for good.
    assert wait_for("alice on the ingest", lambda: room.publishers() == {"alice"})
    refused = "TRTC refused StartPublishCdnStream: UnauthorizedOperation.SdkAppId No permission."
    assert room.failures() == {"bob": f"recording failed: {refused}"}
    room.close()


def test_dismissal_and_removal_count_only_when_they_come_after_the_run_started(
    trtc: TrtcStandIn, nginx: NginxRtmp
) -> None:
    room = TrtcRoom(request_for(3005), settings_for(trtc, nginx))
    room.update_roster(roster(dismissed_at=1000, removed={USER_SIG_OWNER: 1000}))  # yesterday's class
    assert not room.ended() and not room.recorder_removed()
    room.update_roster(roster(dismissed_at=1000, removed={USER_SIG_OWNER: 5000, "someone": 6000}))
    assert room.recorder_removed() and not room.ended()
    room.update_roster(roster(dismissed_at=7000))
    assert room.ended()


def test_relays_a_crashed_run_left_behind_are_stopped_from_its_journal(
    trtc: TrtcStandIn, nginx: NginxRtmp, tmp_path: Path
) -> None:
    trtc.add_room("3006", SimScript(anchors=[SimAnchor(user_id="teacher", leave=60)]))
    journal = tmp_path / "relays.json"
    settings = settings_for(trtc, nginx)
    room = TrtcRoom(request_for(3006, Anchors=["teacher"]), settings, journal)
    wait_for("the relay on the ingest", room.publishers)
    del room  # the process died here: nobody called close()

    [relay] = trtc.relays.values()
    assert not relay.stopped
    assert stop_relays(settings, APP, journal) == []
    assert relay.stopped
    assert stop_relays(settings, APP, journal) == []  # again: nothing left to stop, no error
    assert [c.action for c in trtc.calls].count("StopPublishCdnStream") == 1


def test_a_relay_whose_robot_gave_up_waiting_is_replaced_while_the_anchor_is_wanted(
    nginx: NginxRtmp,
) -> None:
    # As TRTC documents it: a relay may be started for an anchor who is not in the room yet.
    with TrtcStandIn(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, sdk_app_id=APP, usersig_key=SDK_KEY, strict_presence=False
    ) as trtc:
        # student_1 keeps the room alive (the stand-in dismisses an emptied room for good).
        anchors = [SimAnchor(user_id="teacher", leave=3), SimAnchor(user_id="student_1", leave=60)]
        trtc.add_room("3007", SimScript(anchors=anchors))
        now = [0.0]
        room = TrtcRoom(
            request_for(3007, Anchors=["teacher"]), settings_for(trtc, nginx), clock=lambda: now[0]
        )
        assert wait_for("the relay on the ingest", room.publishers) == {"teacher"}
        assert wait_for("the anchor to leave", lambda: room.publishers() == set())
        [first] = trtc.relays.values()
        assert not first.stopped  # the robot waits MaxIdleTime (5 s) for the anchor

        now[0] += 5 + 5.1  # MaxIdleTime and the grace, on the room's clock
        room.publishers()
        assert first.stopped and first.stop_reason == "stopped by StopPublishCdnStream"
        relays = list(trtc.relays.values())
        assert len(relays) == 2 and relays[1].anchor == "teacher" and not relays[1].stopped
        assert relays[1].agent == USER_SIG_OWNER  # the same robot, free again
        room.close()
        assert relays[1].stopped


def test_tencent_cdn_relays_push_and_play_by_template_and_on_air_comes_from_the_callbacks(
    trtc: TrtcStandIn, nginx: NginxRtmp
) -> None:
    trtc.add_room("3008", SimScript(anchors=[SimAnchor(user_id="teacher", leave=60)]))
    settings = settings_for(
        trtc,
        nginx,
        trtc_is_tencent_cdn=1,
        # nginx stands in for the CDN's push and play domains.
        trtc_publish_url=f"{nginx.rtmp_url}/{{stream}}",
        trtc_play_url=f"{nginx.rtmp_url}/{{stream}}",
    )
    room = TrtcRoom(request_for(3008), settings).check()
    room.update_roster(roster({"teacher": 1}))
    assert room.publishers() == {"teacher"}  # the callbacks say so; no statistics page is read
    [start] = [c for c in trtc.calls if c.action == "StartPublishCdnStream"]
    [target] = start.params["PublishCdnParams"]
    assert target["IsTencentCdn"] == 1 and target["PublishCdnUrl"] == room.stream_url("teacher")
    room.update_roster(roster())  # 104: the anchor left
    assert room.publishers() == set()
    room.close()

    no_play_url = settings.model_copy(update={"trtc_play_url": None})
    with pytest.raises(RoomNotFoundError, match="RECORDER_TRTC_PLAY_URL"):
        TrtcRoom(request_for(3008), no_play_url).check()
