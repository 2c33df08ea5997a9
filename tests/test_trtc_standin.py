"""The TRTC API stand-in, driven through the real tencentcloud-sdk-python (pointed at it by its
HTTP profile only): signatures, errors, relays that really publish to nginx-rtmp, room callbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import httpx
import pytest
from av.audio.stream import AudioStream
from av.video.stream import VideoStream
from tencentcloud.common.credential import Credential  # type: ignore[import-untyped]
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (  # type: ignore[import-untyped]
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.trtc.v20190722 import models  # type: ignore[import-untyped]
from tencentcloud.trtc.v20190722.trtc_client import TrtcClient  # type: ignore[import-untyped]

from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.usersig import generate_usersig
from tests.http_receiver import Received, Receiver
from tests.nginx_rtmp import NginxRtmp
from tests.trtc_standin import TrtcStandIn

SECRET_ID = "AKIDtrtcstandin00000000000000000"
SECRET_KEY = "trtc-standin-secret-key-000000000"
CALLBACK_KEY = "CallbackKey0123456789"
APP = 1400000000
AGENT = "recorder_1234"
ROOM = "1234"
URL_REFUSED = "InvalidParameter.PublishCdnUrls"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    with NginxRtmp(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@pytest.fixture(scope="module")
def callback_server() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


@pytest.fixture
def receiver(callback_server: Receiver) -> Receiver:
    """The module's receiver, emptied: the previous test's stand-in has stopped, nothing more comes."""
    callback_server.received.clear()
    return callback_server


@pytest.fixture
def trtc(receiver: Receiver) -> Iterator[TrtcStandIn]:
    standin = TrtcStandIn(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        sdk_app_id=APP,
        callback_url=receiver.url,
        callback_key=CALLBACK_KEY,
    )
    with standin:
        yield standin
    # stop() ends every relay: no thread of it and no ffmpeg it started outlives it.
    assert not [t for t in threading.enumerate() if t.name.startswith("trtc-")]
    for relay_id in standin.relays:
        process = standin._tasks[relay_id].process
        assert process is None or process.poll() is not None


def client(trtc: TrtcStandIn, secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY) -> TrtcClient:
    http = HttpProfile(endpoint=trtc.endpoint, protocol="http", reqTimeout=10)
    return TrtcClient(Credential(secret_id, secret_key), "ap-guangzhou", ClientProfile(httpProfile=http))


def two_anchors(leave: float = 60.0) -> SimScript:
    return SimScript(
        anchors=[
            SimAnchor(user_id="teacher", leave=leave, tone_hz=440),
            SimAnchor(user_id="student", leave=leave, video=False, tone_hz=660),
        ]
    )


def start_params(
    url: str, anchor: str = "teacher", room: str = ROOM, str_room: bool = False, video: bool = True
) -> dict[str, Any]:
    """A single-stream relay as the recorder asks for it (DESIGN.md section 2)."""
    params: dict[str, Any] = {
        "SdkAppId": APP,
        "RoomId": room,
        "RoomIdType": 1 if str_room else 0,
        "WithTranscoding": 0,
        "AgentParams": {"UserId": AGENT, "UserSig": "sig-of-the-request", "MaxIdleTime": 300},
        "AudioParams": {"AudioEncode": {"SampleRate": 44100, "Channel": 2, "BitRate": 64}},
        "SingleSubscribeParams": {"UserMediaStream": {"UserInfo": {"UserId": anchor}, "StreamType": 0}},
        "PublishCdnParams": [{"PublishCdnUrl": url, "IsTencentCdn": 0}],
    }
    if video:
        params["VideoParams"] = {
            "VideoEncode": {"Width": 320, "Height": 240, "Fps": 15, "BitRate": 300, "Gop": 2}
        }
    return params


def subscribed(params: dict[str, Any]) -> dict[str, Any]:
    user_info: dict[str, Any] = params["SingleSubscribeParams"]["UserMediaStream"]["UserInfo"]
    return user_info


def start(api: TrtcClient, params: dict[str, Any]) -> str:
    request = models.StartPublishCdnStreamRequest()
    request.from_json_string(json.dumps(params))
    task_id: str = api.StartPublishCdnStream(request).TaskId
    return task_id


def call(api: TrtcClient, action: str, params: dict[str, Any]) -> Any:
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    return getattr(api, action)(request)


def sdk_error(action: Callable[[], object]) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as caught:
        action()
    return caught.value


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def pull(url: str, seconds: float = 10.0) -> dict[str, Any]:
    """Play `url` from nginx with PyAV: its streams and a few packets of each (bounded)."""
    deadline = time.monotonic() + seconds
    while True:  # nginx turns players away until the relay's ffmpeg has published
        try:
            options = {"analyzeduration": "1000000", "probesize": "500000"}
            container = av.open(url, timeout=(5, 5), options=options)
            break
        except (av.FFmpegError, OSError):
            assert time.monotonic() < deadline, f"{url} never played"
            time.sleep(0.2)
    with container:
        found: dict[str, Any] = {"packets": {}}
        for stream in container.streams:
            if isinstance(stream, AudioStream):
                found["audio"] = (stream.codec_context.sample_rate, stream.codec_context.channels)
            elif isinstance(stream, VideoStream):
                found["video"] = (stream.codec_context.width, stream.codec_context.height)
        counts: dict[str, int] = found["packets"]
        for packet in container.demux():
            if packet.size:
                counts[packet.stream.type] = counts.get(packet.stream.type, 0) + 1
            if min(counts.get(kind, 0) for kind in ("audio", "video") if kind in found) >= 10:
                break
            assert time.monotonic() < deadline, f"too few packets from {url}: {counts}"
    return found


def events(receiver: Receiver) -> list[dict[str, Any]]:
    """The room callbacks received, each checked for TRTC's signature over the raw body."""
    found = []
    for post in list(receiver.received):
        assert post.headers["Sign"] == signature(post), "Sign is base64(HMAC-SHA256(key, raw body))"
        assert post.headers["SdkAppId"] == str(APP)  # spelt as TRTC's document spells it
        assert post.headers["Content-Type"] == "application/json"
        found.append(post.json())
    return found


def signature(post: Received) -> str:
    return base64.b64encode(hmac.new(CALLBACK_KEY.encode(), post.body, hashlib.sha256).digest()).decode()


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    info = event["EventInfo"]
    return (event["EventType"], info.get("UserId"), info.get("Reason"))


# --- signatures and errors ------------------------------------------------------------------


def test_a_signed_start_returns_a_task_and_is_recorded(trtc: TrtcStandIn, nginx: NginxRtmp) -> None:
    trtc.add_room(ROOM, two_anchors())
    params = start_params(f"{nginx.rtmp_url}/teacher")
    task_id = start(client(trtc), params)

    assert task_id.startswith("-") and len(task_id) > 40
    assert trtc.calls[-1].action == "StartPublishCdnStream"
    assert trtc.calls[-1].error_code is None
    assert trtc.calls[-1].params["AgentParams"]["UserId"] == AGENT
    assert trtc.calls[-1].params["PublishCdnParams"] == params["PublishCdnParams"]
    relay = trtc.relays[task_id]
    assert (relay.room, relay.anchor, relay.agent, relay.stopped) == (ROOM, "teacher", AGENT, False)
    assert relay.url == f"{nginx.rtmp_url}/teacher"


@pytest.mark.parametrize(
    ("secret_id", "secret_key", "clock_offset", "code"),
    [
        (SECRET_ID, "not-the-secret-key", 0.0, "AuthFailure.SignatureFailure"),
        ("AKIDsomebodyelse000000000000000", SECRET_KEY, 0.0, "AuthFailure.SecretIdNotFound"),
        (SECRET_ID, SECRET_KEY, 600.0, "AuthFailure.SignatureExpire"),
    ],
)
def test_a_bad_signature_is_refused_and_starts_nothing(
    trtc: TrtcStandIn, nginx: NginxRtmp, secret_id: str, secret_key: str, clock_offset: float, code: str
) -> None:
    trtc.add_room(ROOM, two_anchors())
    trtc.clock_offset = clock_offset
    params = start_params(f"{nginx.rtmp_url}/teacher")

    error = sdk_error(lambda: start(client(trtc, secret_id, secret_key), params))

    assert error.code == code
    assert error.requestId
    assert SECRET_KEY not in str(error)
    assert trtc.relays == {}
    assert [(c.action, c.error_code) for c in trtc.calls] == [("StartPublishCdnStream", code)]


def test_fail_next_answers_the_given_error_once(trtc: TrtcStandIn, nginx: NginxRtmp) -> None:
    trtc.add_room(ROOM, two_anchors())
    trtc.fail_next("StartPublishCdnStream", "FailedOperation.RestrictedConcurrency", "too many tasks")
    api = client(trtc)
    params = start_params(f"{nginx.rtmp_url}/teacher")

    error = sdk_error(lambda: start(api, params))

    assert (error.code, error.message) == ("FailedOperation.RestrictedConcurrency", "too many tasks")
    assert trtc.relays == {}
    task_id = start(api, params)  # only the next call failed
    assert list(trtc.relays) == [task_id]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda p: subscribed(p).update(UserId="late"), "InvalidParameter.UserId"),  # not in yet
        (lambda p: subscribed(p).update(UserId="nobody"), "InvalidParameter.UserId"),
        (lambda p: p["AgentParams"].update(UserId="teacher"), "InvalidParameter.UserId"),
        (lambda p: p.update(WithTranscoding=1), "InvalidParameter"),
        (lambda p: p.update(RoomIdType=1), "FailedOperation.RoomNotExist"),
        (lambda p: p.update(SdkAppId=1400000001), "UnauthorizedOperation.SdkAppId"),
        (lambda p: p.pop("AudioParams"), "MissingParameter.AudioEncodeParams"),
        (lambda p: p["AgentParams"].update(MaxIdleTime=1), "InvalidParameter.OutOfRange"),
        (lambda p: p["AgentParams"].pop("UserSig"), "MissingParameter.UserSig"),
        (lambda p: p["PublishCdnParams"][0].update(PublishCdnUrl="http://h/x"), URL_REFUSED),
    ],
)
def test_start_checks_its_parameters(
    trtc: TrtcStandIn, change: Callable[[dict[str, Any]], object], code: str
) -> None:
    script = two_anchors()
    trtc.add_room(ROOM, SimScript(anchors=[*script.anchors, SimAnchor(user_id="late", join=30, leave=40)]))
    params = start_params("rtmp://127.0.0.1:1/live/unused")
    change(params)

    assert sdk_error(lambda: start(client(trtc), params)).code == code
    assert trtc.relays == {}


def test_a_valid_usersig_is_checked_when_the_app_key_is_known(nginx: NginxRtmp) -> None:
    app_key = "app-secret-key-for-usersig"
    with TrtcStandIn(secret_id=SECRET_ID, secret_key=SECRET_KEY, usersig_key=app_key) as trtc:
        trtc.add_room(ROOM, two_anchors())
        params = start_params(f"{nginx.rtmp_url}/teacher")
        assert sdk_error(lambda: start(client(trtc), params)).code == "InvalidParameter.UserSig"
        params["AgentParams"]["UserSig"] = generate_usersig(APP, app_key, "someone_else")
        assert sdk_error(lambda: start(client(trtc), params)).code == "InvalidParameter.UserSig"
        params["AgentParams"]["UserSig"] = generate_usersig(APP, app_key, AGENT)
        assert start(client(trtc), params) in trtc.relays


# --- relays ---------------------------------------------------------------------------------


def test_relays_publish_the_anchors_media_to_the_rtmp_server(trtc: TrtcStandIn, nginx: NginxRtmp) -> None:
    trtc.add_room(ROOM, two_anchors())
    api = client(trtc)
    with_video = start(api, start_params(f"{nginx.rtmp_url}/teacher"))
    audio_only = start(api, start_params(f"{nginx.rtmp_url}/teacher_audio", video=False))
    camera_off = start(api, start_params(f"{nginx.rtmp_url}/student", anchor="student"))

    teacher = pull(f"{nginx.rtmp_url}/teacher")
    assert teacher["video"] == (320, 240)  # copied as the anchor sends it (WithTranscoding=0)
    assert teacher["audio"] == (44100, 2)  # encoded per AudioParams.AudioEncode
    # No VideoParams: "不填表示纯音频转推", an audio-only relay.
    assert set(pull(f"{nginx.rtmp_url}/teacher_audio")["packets"]) == {"audio"}
    assert set(pull(f"{nginx.rtmp_url}/student")["packets"]) == {"audio"}  # their camera is off

    call(api, "StopPublishCdnStream", {"SdkAppId": APP, "TaskId": with_video})
    relay = trtc.relays[with_video]
    assert relay.stopped and relay.stop_reason == "stopped by StopPublishCdnStream"
    wait_until(lambda: trtc._tasks[with_video].process is None)
    assert not trtc.relays[audio_only].stopped and not trtc.relays[camera_off].stopped
    again = sdk_error(lambda: call(api, "StopPublishCdnStream", {"SdkAppId": APP, "TaskId": with_video}))
    assert again.code == "FailedOperation.TaskNotExist"


def test_removing_the_agent_ends_its_relays(trtc: TrtcStandIn, nginx: NginxRtmp, receiver: Receiver) -> None:
    trtc.add_room(ROOM, two_anchors())
    api = client(trtc)
    tasks = [start(api, start_params(f"{nginx.rtmp_url}/{a}", anchor=a)) for a in ("teacher", "student")]

    call(api, "RemoveUser", {"SdkAppId": APP, "RoomId": int(ROOM), "UserIds": [AGENT]})

    assert all(trtc.relays[t].stopped for t in tasks)
    assert {trtc.relays[t].stop_reason for t in tasks} == {"the relay's agent was removed by RemoveUser"}
    assert trtc.removed == {(ROOM, AGENT)}
    assert ROOM not in trtc.dismissed  # the anchors are still there
    wait_until(lambda: all(trtc._tasks[t].process is None for t in tasks))
    wait_until(lambda: (104, AGENT, 3) in [brief(e) for e in events(receiver)])


def test_removing_an_anchor_ends_their_relay_only(trtc: TrtcStandIn, nginx: NginxRtmp) -> None:
    trtc.add_room(ROOM, two_anchors())
    api = client(trtc)
    teacher = start(api, start_params(f"{nginx.rtmp_url}/teacher"))
    student = start(api, start_params(f"{nginx.rtmp_url}/student", anchor="student"))

    call(api, "RemoveUser", {"SdkAppId": APP, "RoomId": int(ROOM), "UserIds": ["teacher"]})

    assert trtc.relays[teacher].stopped and not trtc.relays[student].stopped
    assert trtc.removed == {(ROOM, "teacher")}
    late = sdk_error(lambda: start(api, start_params(f"{nginx.rtmp_url}/teacher2")))
    assert late.code == "InvalidParameter.UserId"  # they are out of the room


def test_dismissing_the_room_ends_everything(trtc: TrtcStandIn, nginx: NginxRtmp) -> None:
    trtc.add_room(ROOM, two_anchors())
    api = client(trtc)
    tasks = [start(api, start_params(f"{nginx.rtmp_url}/{a}", anchor=a)) for a in ("teacher", "student")]

    call(api, "DismissRoom", {"SdkAppId": APP, "RoomId": int(ROOM)})

    assert all(trtc.relays[t].stopped for t in tasks)
    assert trtc.dismissed == {ROOM}
    again = sdk_error(lambda: call(api, "DismissRoom", {"SdkAppId": APP, "RoomId": int(ROOM)}))
    assert again.code == "FailedOperation.RoomNotExist"
    late = sdk_error(lambda: start(api, start_params(f"{nginx.rtmp_url}/x")))
    assert late.code == "FailedOperation.RoomNotExist"


def test_string_rooms_have_their_own_actions(trtc: TrtcStandIn, nginx: NginxRtmp) -> None:
    trtc.add_room("class-7b", two_anchors(), str_room=True)
    api = client(trtc)
    task_id = start(api, start_params(f"{nginx.rtmp_url}/teacher", room="class-7b", str_room=True))
    # The integer forms do not reach a string room.
    wrong = sdk_error(lambda: call(api, "DismissRoom", {"SdkAppId": APP, "RoomId": 7}))
    assert wrong.code == "FailedOperation.RoomNotExist"

    call(api, "RemoveUserByStrRoomId", {"SdkAppId": APP, "RoomId": "class-7b", "UserIds": [AGENT]})
    assert trtc.relays[task_id].stopped and trtc.removed == {("class-7b", AGENT)}
    call(api, "DismissRoomByStrRoomId", {"SdkAppId": APP, "RoomId": "class-7b"})
    assert trtc.dismissed == {"class-7b"}


def test_a_room_without_anchors_for_max_idle_time_is_dismissed(
    trtc: TrtcStandIn, nginx: NginxRtmp, receiver: Receiver
) -> None:
    trtc.add_room(ROOM, SimScript(anchors=[SimAnchor(user_id="teacher", leave=1.0)]))
    params = start_params(f"{nginx.rtmp_url}/teacher")
    params["AgentParams"]["MaxIdleTime"] = 5  # the documented minimum
    task_id = start(client(trtc), params)

    wait_until(lambda: ROOM in trtc.dismissed, seconds=10)
    left = time.monotonic()
    relay = trtc.relays[task_id]
    assert relay.stopped and relay.stop_reason == "no anchor for MaxIdleTime (5 s)"
    assert relay.pushes == 1
    wait_until(lambda: 102 in [e["EventType"] for e in events(receiver)])
    assert time.monotonic() - left < 2
    room_events = [brief(e) for e in events(receiver)]
    assert room_events[-3:] == [(104, "teacher", 1), (104, AGENT, 1), (102, None, None)]


# --- callbacks ------------------------------------------------------------------------------


def test_room_callbacks_arrive_signed_as_trtc_signs_them(
    trtc: TrtcStandIn, nginx: NginxRtmp, receiver: Receiver
) -> None:
    trtc.add_room(ROOM, two_anchors())
    api = client(trtc)
    start(api, start_params(f"{nginx.rtmp_url}/teacher"))
    call(api, "RemoveUser", {"SdkAppId": APP, "RoomId": int(ROOM), "UserIds": [AGENT]})
    call(api, "DismissRoom", {"SdkAppId": APP, "RoomId": int(ROOM)})

    wait_until(lambda: len(receiver.received) >= 11)
    received = events(receiver)
    assert [brief(e) for e in received] == [
        (101, "teacher", None),  # the room is created by whoever enters first
        (103, "teacher", 1),
        (201, "teacher", None),
        (203, "teacher", None),
        (103, "student", 1),
        (203, "student", None),  # their camera is off: audio only
        (103, AGENT, 1),  # the relay robot enters
        (104, AGENT, 3),  # 3: removed from the room
        (104, "teacher", 3),  # DismissRoom removes everyone
        (104, "student", 3),
        (102, None, None),
    ]
    teacher_in = received[1]
    assert teacher_in["EventGroupId"] == 1 and received[2]["EventGroupId"] == 2
    assert teacher_in["EventInfo"]["RoomId"] == int(ROOM)  # a number for an integer room
    assert teacher_in["EventInfo"]["Role"] == 20
    assert abs(teacher_in["EventInfo"]["EventMsTs"] / 1000 - time.time()) < 30
    assert b"\n\t" in receiver.received[0].body  # printed as TRTC prints it: check the raw bytes


def test_a_relay_waits_for_its_anchor_and_pushes_each_appearance(nginx: NginxRtmp) -> None:
    # As TRTC documents it: a task may start before its anchor enters, and lives on while they
    # are away for less than MaxIdleTime (strict_presence=False is that behaviour).
    script = SimScript(
        anchors=[
            SimAnchor(user_id="teacher", join=1.0, leave=2.0),
            SimAnchor(user_id="teacher", join=2.6, leave=9),
        ]
    )
    with TrtcStandIn(secret_id=SECRET_ID, secret_key=SECRET_KEY, strict_presence=False) as trtc:
        trtc.add_room(ROOM, script)
        params = start_params(f"{nginx.rtmp_url}/teacher")
        params["AgentParams"]["MaxIdleTime"] = 5
        relay = trtc.relays[start(client(trtc), params)]
        assert relay.pushes == 0
        wait_until(lambda: relay.pushes == 2, seconds=5)
        assert not relay.stopped and relay.push_failures == 0
        assert set(pull(f"{nginx.rtmp_url}/teacher")["packets"]) == {"audio", "video"}


def test_the_script_can_remove_the_recorder(trtc: TrtcStandIn, nginx: NginxRtmp, receiver: Receiver) -> None:
    trtc.add_room(ROOM, SimScript(anchors=[SimAnchor(user_id="teacher", leave=30)], remove_recorder_at=1.0))
    relay = trtc.relays[start(client(trtc), start_params(f"{nginx.rtmp_url}/teacher"))]

    wait_until(lambda: relay.stopped, seconds=5)
    assert relay.stop_reason == "the recorder was removed from the room (script)"
    wait_until(lambda: (104, AGENT, 3) in [brief(e) for e in events(receiver)])
    assert ROOM not in trtc.dismissed


def test_the_signature_is_checked_as_documented_not_as_the_sdk_happens_to_sign(trtc: TrtcStandIn) -> None:
    """Signed by hand after the API 3.0 document: more signed headers than the SDK signs, and
    header values lower-cased in the canonical headers; a changed body no longer matches."""
    trtc.add_room(ROOM, two_anchors())
    body = json.dumps({"SdkAppId": APP, "RoomId": int(ROOM)}).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Host": trtc.endpoint,
        "X-TC-Action": "DismissRoom",
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": "2019-07-22",
        "X-TC-Region": "ap-guangzhou",
    }
    signed = "content-type;host;x-tc-action"
    # The document: header names AND values lower-cased and trimmed (x-tc-action:dismissroom).
    values = {name.lower(): value.strip().lower() for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{values[name]}\n" for name in signed.split(";"))
    date = time.strftime("%Y-%m-%d", time.gmtime(timestamp))
    canonical = f"POST\n/\n\n{canonical_headers}\n{signed}\n{hashlib.sha256(body).hexdigest()}"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/trtc/tc3_request\n{digest}"
    key = ("TC3" + SECRET_KEY).encode()
    for part in (date, "trtc", "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/{date}/trtc/tc3_request, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    url = f"http://{trtc.endpoint}/"

    with httpx.Client(trust_env=False, timeout=5) as http:
        tampered = http.post(url, content=body.replace(b"1234", b"1235"), headers=headers).json()["Response"]
        answer = http.post(url, content=body, headers=headers).json()["Response"]

    assert tampered["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert "Error" not in answer and answer["RequestId"]
    assert trtc.dismissed == {ROOM}
