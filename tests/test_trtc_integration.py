"""The original's "Testing function", replayed against TRTC as the service meets it, every part
a real process or server on loopback: a Prefect server and worker running the deployment, the
gateway (`recorder serve`), nginx-rtmp as the ingest, the TRTC API stand-in (it signs-checks
every call, relays anchors with ffmpeg and sends signed room callbacks to the gateway), and a
callback receiver.

A room has one anchor publishing; the original's sample request goes to the gateway; the run
asks TRTC to relay the anchor (StartPublishCdnStream → nginx-rtmp → PyAV); then RemoveUser on
the recorder's UserId (or the room's dismissal) ends the recording, and the callback brings the
files."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import pytest
from tencentcloud.common.credential import Credential  # type: ignore[import-untyped]
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.trtc.v20190722 import models  # type: ignore[import-untyped]
from tencentcloud.trtc.v20190722.trtc_client import TrtcClient  # type: ignore[import-untyped]

from recorder.result import ResultDocument
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.sealing import new_service_key
from recorder.usersig import generate_usersig
from tests.gateway_process import free_port, gateway_process
from tests.http_receiver import Received, Receiver
from tests.nginx_rtmp import NginxRtmp
from tests.prefect_service import PrefectService
from tests.trtc_standin import TrtcStandIn

APP = 1400000000
RECORDER = "user_55952145"  # the sample request's UserId: the relay robot of the first anchor
SECRET_ID = "AKIDintegrationtrtc000000000000000"
SECRET_KEY = "trtc-api-key-INTEGRATION-NEVER-STORE"
SDK_KEY = "sdk-key-INTEGRATION-NEVER-STORE-1f2e"
CALLBACK_KEY = "callback-key-INTEGRATION-NEVER-STORE"
USER_SIG = generate_usersig(APP, SDK_KEY, RECORDER)
WAIT_SECONDS = 150.0

pytestmark = pytest.mark.timeout(600)


@dataclass
class Service:
    prefect: PrefectService
    gateway: httpx.Client
    gateway_log: Path
    trtc: TrtcStandIn
    nginx: NginxRtmp
    callbacks: Receiver

    def api(self) -> TrtcClient:
        """What a user's own code calls TRTC with (here pointed at the stand-in)."""
        http = HttpProfile(endpoint=self.trtc.endpoint, protocol="http", reqTimeout=10)
        return TrtcClient(Credential(SECRET_ID, SECRET_KEY), "ap-guangzhou", ClientProfile(httpProfile=http))

    def wait(self, what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(
            f"timed out waiting for {what}\n{self.prefect.logs()[-6000:]}\n"
            f"{self.gateway_log.read_text(errors='replace')[-3000:]}"
        )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("trtc-service")
    service_key = new_service_key()
    gateway_port = free_port()
    with (
        NginxRtmp(home / "nginx") as nginx,
        Receiver() as callbacks,
        TrtcStandIn(
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            sdk_app_id=APP,
            callback_url=f"http://127.0.0.1:{gateway_port}/trtc/callback",
            callback_key=CALLBACK_KEY,
            usersig_key=SDK_KEY,
        ) as trtc,
    ):
        worker_env = {
            "RECORDER_SERVICE_KEY": service_key,
            "RECORDER_WORK_DIR": str(home / "work"),
            "RECORDER_STORAGE_DIR": str(home / "recordings"),
            "RECORDER_POLL_SECONDS": "0.2",
            "RECORDER_ROOM_BACKEND": "trtc",
            "RECORDER_RTMP_URL": nginx.rtmp_url,
            "RECORDER_RTMP_STAT_URL": nginx.stat_url,
            "RECORDER_RTMP_STREAM_SECRET": "ingest-secret-INTEGRATION",
            "RECORDER_TRTC_ENDPOINT": trtc.endpoint,
            "RECORDER_TRTC_SCHEME": "http",
            "RECORDER_TRTC_SECRET_ID": SECRET_ID,
            "RECORDER_TRTC_SECRET_KEY": SECRET_KEY,
            "RECORDER_TRTC_SDK_SECRET_KEY": SDK_KEY,
        }
        with PrefectService(home / "prefect", worker_env) as prefect:
            gateway_log = home / "gateway.log"
            env = {"RECORDER_SERVICE_KEY": service_key, "RECORDER_TRTC_CALLBACK_KEY": CALLBACK_KEY}
            with gateway_process(prefect, gateway_log, env, port=gateway_port) as client:
                yield Service(prefect, client, gateway_log, trtc, nginx, callbacks)


def _sample_request(room: dict[str, Any], callback: str, **extra: Any) -> dict[str, Any]:
    """The original page's sample request (its keys, a real UserSig, a Callback)."""
    return {
        "SdkAppId": APP,
        **room,
        "UserId": RECORDER,
        "Mode": "02",
        "UserSig": USER_SIG,
        "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789", "Path": "/trtc"},
        "Callback": callback,
        **extra,
    }


def _callback_for(service: Service, room: int | str) -> Received | None:
    for posted in list(service.callbacks.received):
        if posted.json()["RoomId"] == str(room) or posted.json().get("StrRoomId") == room:
            return posted
    return None


def _relays_of(service: Service, room: str) -> list[Any]:
    return [r for r in service.trtc.relays.values() if r.room == room]


def _probe(record_file: str) -> dict[str, Any]:
    path = url2pathname(urlparse(record_file).path)
    assert Path(path).is_file(), record_file
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path],
        capture_output=True,
        check=True,
        timeout=30,
    )
    probed: dict[str, Any] = json.loads(shown.stdout)
    return probed


def _check_playable(entry_file: str, at_least: float) -> None:
    probed = _probe(entry_file)
    codecs = sorted(s["codec_name"] for s in probed["streams"])
    assert codecs == ["aac", "h264"], probed["streams"]
    assert float(probed["format"]["duration"]) >= at_least, probed["format"]
    # Decoded to the end: no error from the last frame either.
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", url2pathname(urlparse(entry_file).path), "-f", "null", "-"],
        capture_output=True,
        timeout=60,
    )
    assert decoded.returncode == 0 and not decoded.stderr.strip(), decoded.stderr[-2000:]


def _record_then_remove(
    service: Service, room: dict[str, Any], room_name: str, remove: Callable[[], None]
) -> None:
    """Records the room's anchor for a few seconds, removes the recorder, checks what comes back."""
    answer = service.gateway.post("/", json=_sample_request(room, service.callbacks.url))
    assert (answer.status_code, answer.text) == (202, "Async run task submitted")
    [relay] = service.wait("the relay", lambda: _relays_of(service, room_name))
    assert relay.anchor == "teacher" and relay.agent == RECORDER
    service.wait("the relay to publish", lambda: relay.pushes >= 1)
    time.sleep(6)  # six seconds of the class on air

    ended_by_removal = "recording ends: the recorder was removed from the room"
    removals_before = service.prefect.logs().count(ended_by_removal)
    removed_at = time.monotonic()
    remove()
    posted = service.wait("the callback", lambda: _callback_for(service, room_name))
    took = time.monotonic() - removed_at

    document = ResultDocument.model_validate(posted.json())
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1)], document
    assert document.Files[0].Message.startswith("ok: ") and "broke off" not in document.Files[0].Message
    _check_playable(document.Files[0].RecordFile, at_least=4.0)
    assert relay.stopped
    # The removal took effect at once (the roster said so), not after a stream timeout.
    assert took < 30, took
    service.wait(
        "the run's log", lambda: service.prefect.logs().count(ended_by_removal) > removals_before, 10
    )


def test_remove_user_on_the_recorder_ends_the_recording_of_a_roomid_room(service: Service) -> None:
    service.trtc.add_room("1234", SimScript(anchors=[SimAnchor(user_id="teacher", leave=120)]))

    def remove() -> None:
        call = models.RemoveUserRequest()
        call.SdkAppId, call.RoomId, call.UserIds = APP, 1234, [RECORDER]
        service.api().RemoveUser(call)

    _record_then_remove(service, {"RoomId": 1234}, "1234", remove)
    starts = [
        c for c in service.trtc.calls if c.action == "StartPublishCdnStream" and c.params["RoomId"] == "1234"
    ]
    assert [c.params["RoomIdType"] for c in starts] == [0]


def test_remove_user_by_str_room_id_ends_the_recording_of_a_strroomid_room(service: Service) -> None:
    service.trtc.add_room(
        "class 7|A", SimScript(anchors=[SimAnchor(user_id="teacher", leave=120)]), str_room=True
    )

    def remove() -> None:
        call = models.RemoveUserByStrRoomIdRequest()
        call.SdkAppId, call.RoomId, call.UserIds = APP, "class 7|A", [RECORDER]  # RoomId: a string here
        service.api().RemoveUserByStrRoomId(call)

    _record_then_remove(service, {"StrRoomId": "class 7|A"}, "class 7|A", remove)
    starts = [
        c
        for c in service.trtc.calls
        if c.action == "StartPublishCdnStream" and c.params["RoomId"] == "class 7|A"
    ]
    assert [c.params["RoomIdType"] for c in starts] == [1]


def test_the_room_dismissed_after_max_idle_time_ends_the_recording(service: Service) -> None:
    service.trtc.add_room("5678", SimScript(anchors=[SimAnchor(user_id="teacher", leave=25)]))
    answer = service.gateway.post(
        "/", json=_sample_request({"RoomId": 5678}, service.callbacks.url, MaxIdleTime=5)
    )
    assert answer.status_code == 202
    [relay] = service.wait("the relay", lambda: _relays_of(service, "5678"))

    posted = service.wait("the callback", lambda: _callback_for(service, 5678))
    document = ResultDocument.model_validate(posted.json())
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1)], document
    _check_playable(document.Files[0].RecordFile, at_least=3.0)
    # The robot waited MaxIdleTime for the anchor, left, and TRTC dismissed the emptied room.
    assert "5678" in service.trtc.dismissed and relay.stopped
    assert "recording ends: the room was dismissed" in service.prefect.logs()
    assert [c.action for c in service.trtc.calls if c.action == "StopPublishCdnStream"]


def test_no_secret_reaches_prefect_or_any_log(service: Service) -> None:
    """After the runs above: the UserSig, API keys and callback key are nowhere Prefect keeps
    things or any process printed."""
    logs = service.prefect.logs() + service.gateway_log.read_text(errors="replace")
    assert "/trtc/callback" in logs  # the room callbacks really went through the gateway
    secrets = [USER_SIG, SECRET_KEY, SDK_KEY, CALLBACK_KEY]
    for secret in secrets:
        assert secret not in logs
    for path in service.prefect.database_files():
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (secret[:8], path)
