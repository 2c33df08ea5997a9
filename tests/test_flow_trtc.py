"""A record-room flow run in this process on the `trtc` backend: the TRTC API stand-in relays
the request's Anchors into a real nginx-rtmp. What a refused relay and a failed run leave."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.record_room import record_room, run_request
from recorder.request import parse_request
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.usersig import generate_usersig
from tests.conftest import Dirs
from tests.http_receiver import Receiver
from tests.media_check import ffprobe
from tests.nginx_rtmp import NginxRtmp
from tests.prefect_records import task_run_states
from tests.trtc_standin import TrtcStandIn

APP = 1400000456
SECRET_ID = "AKIDflowtrtc000000000000000000000"
SECRET_KEY = "flow-trtc-key-NEVER-STORE-8e1d"
SDK_KEY = "flow-trtc-sdk-key-NEVER-STORE-2b2b"
RECORDER = "recorder_flow"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRtmp]:
    with NginxRtmp(tmp_path / "nginx") as server:
        yield server


@pytest.fixture
def trtc(dirs: Dirs, nginx: NginxRtmp, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrtcStandIn]:
    with TrtcStandIn(
        secret_id=SECRET_ID, secret_key=SECRET_KEY, sdk_app_id=APP, usersig_key=SDK_KEY
    ) as standin:
        settings = {
            "ROOM_BACKEND": "trtc",
            "RTMP_URL": nginx.rtmp_url,
            "RTMP_STAT_URL": nginx.stat_url,
            "TRTC_ENDPOINT": standin.endpoint,
            "TRTC_SCHEME": "http",
            "TRTC_SECRET_ID": SECRET_ID,
            "TRTC_SECRET_KEY": SECRET_KEY,
            "TRTC_SDK_SECRET_KEY": SDK_KEY,
        }
        for name, value in settings.items():
            monkeypatch.setenv(f"RECORDER_{name}", value)
        yield standin


def request(room: int, callback: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "SdkAppId": APP,
        "RoomId": room,
        "UserId": RECORDER,
        "UserSig": generate_usersig(APP, SDK_KEY, RECORDER),
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "class-1250000000"},
        "Mode": "02",
        "MaxIdleTime": 5,
        "Callback": callback,
        **fields,
    }


def test_a_refused_relay_is_a_status_0_entry_with_trtcs_code_and_the_others_are_recorded(
    trtc: TrtcStandIn, dirs: Dirs
) -> None:
    anchors = [SimAnchor(user_id="teacher", leave=8), SimAnchor(user_id="student_1", leave=60)]
    trtc.add_room("4101", SimScript(anchors=anchors))
    # The first relay asked for (student_1, in sorted order) is refused for good.
    trtc.fail_next("StartPublishCdnStream", "InvalidParameter.SdkAppId", "The SdkAppId is not enabled.")
    with Receiver() as receiver:
        document, state = run_request(
            parse_request(request(4101, receiver.url, Anchors=["student_1", "teacher"], MaxIdleTime=5))
        )
        [posted] = receiver.received

    assert posted.json() == document.model_dump(mode="json")
    by_anchor = {f.UserId: f for f in document.Files}
    assert set(by_anchor) == {"student_1", "teacher"}
    refused = by_anchor["student_1"]
    assert (refused.Status, refused.RecordFile) == (0, "")
    assert refused.Message == (
        "recording failed: TRTC refused StartPublishCdnStream: InvalidParameter.SdkAppId "
        "The SdkAppId is not enabled."
    )
    assert state.is_failed() and "student_1" in (state.message or "")
    # teacher was relayed by the request's robot, since student_1's relay never ran.
    relays = list(trtc.relays.values())
    assert {(r.anchor, r.agent) for r in relays} == {("teacher", RECORDER)}
    assert all(r.stopped for r in relays)
    assert by_anchor["teacher"].Status == 1
    probed = ffprobe(Path(by_anchor["teacher"].RecordFile.removeprefix("file://")))
    assert (probed.codec("video"), probed.codec("audio")) == ("h264", "aac")
    assert probed.duration >= 3


def test_a_run_that_fails_while_relaying_still_stops_its_relays(
    trtc: TrtcStandIn, nginx: NginxRtmp, dirs: Dirs
) -> None:
    trtc.add_room("4102", SimScript(anchors=[SimAnchor(user_id="teacher", leave=60)]))

    def lose_the_ingest() -> None:
        # Once the relay publishes, the ingest goes away: its statistics page no longer answers.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(r.pushes for r in trtc.relays.values()):
            time.sleep(0.1)
        time.sleep(2)
        nginx.stop()

    killer = threading.Thread(target=lose_the_ingest)
    killer.start()
    state = record_room(parse_request(request(4102, Anchors=["teacher"])), return_state=True)
    killer.join(timeout=70)

    assert state.is_failed()
    [relay] = trtc.relays.values()
    assert relay.stopped and relay.stop_reason == "stopped by StopPublishCdnStream"
    stops = [states for name, states in task_run_states(state).items() if name.startswith("stop-relays")]
    assert stops == [["Completed"]]
