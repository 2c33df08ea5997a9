"""recorder.trtc_api against the TRTC API stand-in: the SDK is pointed at it by settings only,
and every call it makes is signed-checked there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.settings import RecorderSettings
from recorder.trtc_api import RelaySpec, TrtcApiError, TrtcConfigError, TrtcRelayApi, api_credential
from tests.trtc_standin import TrtcStandIn

SECRET_ID = "AKIDtrtcapi0000000000000000000000"
SECRET_KEY = "trtc-api-secret-NEVER-SHOWN-4f1e"
USER_SIG = "usersig-NEVER-SHOWN-9a8b"
APP = 1400000123

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def trtc() -> Iterator[TrtcStandIn]:
    with TrtcStandIn(secret_id=SECRET_ID, secret_key=SECRET_KEY, sdk_app_id=APP) as standin:
        standin.add_room("2001", SimScript(anchors=[SimAnchor(user_id="teacher", leave=60)]))
        standin.add_room(
            "class A|1", SimScript(anchors=[SimAnchor(user_id="pupil", leave=60)]), str_room=True
        )
        yield standin


def settings_for(trtc: TrtcStandIn, **changes: object) -> RecorderSettings:
    values: dict[str, object] = {
        "trtc_endpoint": trtc.endpoint,
        "trtc_scheme": "http",
        "trtc_secret_id": SECRET_ID,
        "trtc_secret_key": SecretStr(SECRET_KEY),
    }
    values.update(changes)
    return RecorderSettings.model_validate(values)


def spec(
    room: str = "2001", anchor: str = "teacher", *, str_room: bool = False, video: bool = True
) -> RelaySpec:
    return RelaySpec(
        room=room,
        str_room=str_room,
        anchor=anchor,
        agent_id="recorder_2001",
        agent_sig=SecretStr(USER_SIG),
        max_idle=1,
        # Nothing listens there: the relay is accepted and keeps trying to push.
        publish_url=SecretStr("rtmp://127.0.0.1:9/live/teacher_key0123"),
        video=video,
    )


def test_a_relay_starts_as_the_api_documents_it_and_stops_once(trtc: TrtcStandIn) -> None:
    api = TrtcRelayApi(settings_for(trtc), APP)
    task_id = api.start(spec())

    [call] = [c for c in trtc.calls if c.action == "StartPublishCdnStream"]
    params = call.params
    assert params["RoomId"] == "2001" and params["RoomIdType"] == 0  # an integer room, as a string
    assert params["WithTranscoding"] == 0
    assert params["AgentParams"] == {"UserId": "recorder_2001", "UserSig": USER_SIG, "MaxIdleTime": 5}
    assert params["AudioParams"]["AudioEncode"] == {"SampleRate": 48000, "Channel": 2, "BitRate": 64}
    assert params["SingleSubscribeParams"]["UserMediaStream"] == {
        "UserInfo": {"UserId": "teacher"},
        "StreamType": 0,
    }
    assert params["PublishCdnParams"] == [
        {"PublishCdnUrl": "rtmp://127.0.0.1:9/live/teacher_key0123", "IsTencentCdn": 0}
    ]
    assert "VideoParams" in params
    assert trtc.relays[task_id].anchor == "teacher"

    assert api.stop(task_id) is True
    assert trtc.relays[task_id].stopped
    assert api.stop(task_id) is False  # ended already: TaskNotExist is not a failure here


def test_string_rooms_and_audio_only_relays(trtc: TrtcStandIn) -> None:
    api = TrtcRelayApi(settings_for(trtc, trtc_audio_channels=1, trtc_audio_kbps=48), APP)
    task_id = api.start(spec("class A|1", "pupil", str_room=True, video=False))
    params = trtc.calls[-1].params
    assert params["RoomIdType"] == 1 and params["RoomId"] == "class A|1"
    assert "VideoParams" not in params
    assert params["AudioParams"]["AudioEncode"]["Channel"] == 1
    assert not trtc.relays[task_id].video
    api.stop(task_id)


def test_a_refused_start_names_the_action_and_trtcs_code(trtc: TrtcStandIn) -> None:
    api = TrtcRelayApi(settings_for(trtc), APP)
    trtc.fail_next("StartPublishCdnStream", "FailedOperation.RoomNotExist", "Room 2001 does not exist.")
    with pytest.raises(TrtcApiError) as refused:
        api.start(spec())
    assert str(refused.value) == (
        "TRTC refused StartPublishCdnStream: FailedOperation.RoomNotExist Room 2001 does not exist."
    )
    assert not refused.value.transient

    trtc.fail_next("StartPublishCdnStream", "InternalError", "try again")
    with pytest.raises(TrtcApiError) as busy:
        api.start(spec())
    assert busy.value.transient


def test_wrong_keys_are_refused_without_showing_them(trtc: TrtcStandIn) -> None:
    api = TrtcRelayApi(settings_for(trtc, trtc_secret_key=SecretStr("not-the-key-NEVER-SHOWN")), APP)
    with pytest.raises(TrtcApiError) as refused:
        api.start(spec())
    assert refused.value.code == "AuthFailure.SignatureFailure"
    assert "NEVER-SHOWN" not in str(refused.value)
    assert not trtc.relays


def test_an_unreachable_endpoint_is_a_transient_network_error() -> None:
    settings = RecorderSettings(
        trtc_endpoint="127.0.0.1:9", trtc_scheme="http", trtc_secret_id="AKID", trtc_secret_key=SecretStr("k")
    )
    with pytest.raises(TrtcApiError) as unreachable:
        TrtcRelayApi(settings, APP).start(spec())
    assert unreachable.value.code == "ClientNetworkError"
    assert unreachable.value.transient
    assert USER_SIG not in str(unreachable.value) and "teacher_key0123" not in str(unreachable.value)


def test_keys_come_from_the_settings_else_the_environment() -> None:
    from_settings = api_credential(
        RecorderSettings(trtc_secret_id="AKIDset", trtc_secret_key=SecretStr("k1")),
        {"TENCENTCLOUD_SECRETID": "AKIDenv", "TENCENTCLOUD_SECRETKEY": "k2"},
    )
    assert from_settings.secret_id == "AKIDset"
    from_env = api_credential(
        RecorderSettings(),
        {
            "TENCENTCLOUD_SECRETID": "AKIDenv",
            "TENCENTCLOUD_SECRETKEY": "k2",
            "TENCENTCLOUD_SESSIONTOKEN": "t",
        },
    )
    assert (from_env.secret_id, from_env.token) == ("AKIDenv", "t")
    with pytest.raises(TrtcConfigError, match="RECORDER_TRTC_SECRET_ID and RECORDER_TRTC_SECRET_KEY"):
        api_credential(RecorderSettings(), {})
