"""The whole service as it is deployed, every part a real process or server on loopback:
a Prefect server, the `recorders` pool's worker running the record-room deployment from
prefect.yaml, the gateway (`recorder serve`), a simulated room, the COS endpoint and a
callback receiver. The original's sample request goes in over HTTP; the result document
comes out at the callback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Cancelling

from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.sealing import new_service_key
from tests.cos_endpoint import CosEndpoint
from tests.gateway_process import free_port, gateway_process
from tests.http_receiver import Received, Receiver
from tests.prefect_service import PrefectService

USER_SIG = "eJwtzNEKgkAUBNB-2efQ3e3eUqG3tMCKJJEIIxxxxx-INTEGRATION-NEVER-STORE"
SECRET_KEY = "cos-key-INTEGRATION-NEVER-STORE-77e2"
SECRET_ID = "AKIDintegration"
API_KEY = "integration-api-key-4c1d"
BUCKET, REGION = "test-123456789", "ap-shanghai"
WAIT_SECONDS = 150.0
STEPS = {"join", "record", "transcode", "upload", "callback", "cleanup"}


@dataclass
class Service:
    prefect: PrefectService
    gateway: httpx.Client
    gateway_log: Path
    cos: CosEndpoint
    callbacks: Receiver
    home: Path
    service_key: str


def _wait(what: str, check: Callable[[], Any], seconds: float, service: PrefectService) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{service.logs()[-6000:]}")


# One room per test, each served on its own port by this process: the worker's flow
# processes reach them through RECORDER_SIM_ROOM_URL, so the port is fixed up front.
ROOM_PORT = free_port()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("service")
    service_key = new_service_key()
    with (
        CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as cos,
        Receiver() as callbacks,
    ):
        worker_env = {
            "RECORDER_SERVICE_KEY": service_key,
            "RECORDER_SIM_ROOM_URL": f"http://127.0.0.1:{ROOM_PORT}",
            "RECORDER_WORK_DIR": str(home / "work"),
            "RECORDER_POLL_SECONDS": "0.2",
            "RECORDER_STORAGE": "cos",
            "RECORDER_COS_SCHEME": "http",
            "RECORDER_COS_IP": cos.host,
            "RECORDER_COS_PORT": str(cos.port),
            "RECORDER_COS_REQUEST_RETRIES": "1",
        }
        with PrefectService(home / "prefect", worker_env) as prefect:
            gateway_log = home / "gateway.log"
            env = {"RECORDER_SERVICE_KEY": service_key, "RECORDER_API_KEYS": API_KEY}
            with gateway_process(prefect, gateway_log, env, headers={"X-Api-Key": API_KEY}) as client:
                yield Service(prefect, client, gateway_log, cos, callbacks, home, service_key)


def _sample_request(room_id: int, callback: str) -> dict[str, Any]:
    """The original page's sample request, with the keys and Callback it leaves out."""
    return {
        "SdkAppId": 1400000000,
        "RoomId": room_id,
        "UserId": "user_55952145",
        "Mode": "02",
        "UserSig": USER_SIG,
        "CosConfig": {
            "Region": REGION,
            "Bucket": BUCKET,
            "Path": "/trtc",
            "SecretId": SECRET_ID,
            "SecretKey": SECRET_KEY,
        },
        "Callback": callback,
    }


def _callback_for(service: Service, room_id: int) -> Received | None:
    for posted in list(service.callbacks.received):
        if posted.json()["RoomId"] == str(room_id):
            return posted
    return None


def _task_runs(service: Service, run_id: str) -> list[str]:
    """Names of the run's task runs: `record-teacher`, and `join-1a2` (Prefect's suffix)."""
    with service.prefect.client_settings(), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return [run.name for run in runs]


def _stored(service: Service, url: str) -> bytes:
    parsed = urlparse(url)
    assert parsed.netloc == f"{BUCKET}.cos.{REGION}.myqcloud.com", url
    stored = service.cos.object(unquote(parsed.path).lstrip("/"))
    assert stored is not None, url
    return stored


def test_a_request_over_http_is_recorded_by_the_worker_and_called_back(service: Service) -> None:
    script = SimScript(
        anchors=[
            SimAnchor(user_id="teacher", leave=4.0),
            SimAnchor(user_id="student_1", join=0.5, leave=3.0),
        ],
        dismiss_at=5.0,  # the original's sample has no MaxIdleTime: the room ends it
    )
    with SimRoom(1400000000, "43474", script, port=ROOM_PORT):
        answer = service.gateway.post("/", json=_sample_request(43474, service.callbacks.url))
        assert (answer.status_code, answer.text) == (202, "Async run task submitted")
        run_id = answer.headers["x-request-id"]
        again = service.gateway.post("/recordings", json=_sample_request(43474, service.callbacks.url))
        assert again.headers["x-request-id"] == run_id  # the same recording: the same run
        unauthorised = service.gateway.post(
            "/", json=_sample_request(43475, service.callbacks.url), headers={"X-Api-Key": "wrong"}
        )
        assert unauthorised.status_code == 401
        posted = _wait("the callback", lambda: _callback_for(service, 43474), WAIT_SECONDS, service.prefect)

    document = ResultDocument.model_validate(posted.json())
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1), ("student_1", 1)], document
    for entry in document.Files:
        assert len(_stored(service, entry.RecordFile)) > 50_000
    status = _wait(
        "the run to finish",
        lambda: (s := service.gateway.get(f"/recordings/{run_id}").json())["Final"] and s,
        60,
        service.prefect,
    )
    assert status["State"] == "Completed"
    assert ResultDocument.model_validate(status["Result"]) == document
    assert {name.split("-")[0] for name in _task_runs(service, run_id)} >= STEPS

    # Neither secret anywhere Prefect keeps things, nor in what any process printed.
    secrets = [USER_SIG, SECRET_KEY]
    logs = service.prefect.logs() + service.gateway_log.read_text(errors="replace")
    assert "POST / HTTP/1.1" in logs and "record-room" in logs  # real logs: gateway and worker
    for path in service.prefect.database_files():
        content = path.read_bytes()
        assert all(secret.encode() not in content for secret in secrets), path
    assert all(secret not in logs for secret in secrets)
    with service.prefect.client_settings(), get_client(sync_client=True) as client:
        api_logs = " ".join(log.message for log in client.read_logs())
    assert "teacher" in api_logs and all(secret not in api_logs for secret in secrets)


def _start_long_recording(service: Service, room_id: int) -> tuple[SimRoom, str]:
    script = SimScript(
        anchors=[SimAnchor(user_id="host", leave=120.0), SimAnchor(user_id="guest", leave=120.0)]
    )
    room = SimRoom(1400000000, str(room_id), script, port=ROOM_PORT).start()
    answer = service.gateway.post("/", json=_sample_request(room_id, service.callbacks.url))
    run_id = answer.headers["x-request-id"]
    # Recording for real: both record tasks running, and a few seconds of media.
    _wait(
        "both recordings",
        lambda: len([n for n in _task_runs(service, run_id) if n.startswith("record-")]) == 2,
        WAIT_SECONDS,
        service.prefect,
    )
    time.sleep(4)
    return room, run_id


def test_stop_ends_the_recording_and_delivers_it(service: Service) -> None:
    room, run_id = _start_long_recording(service, 50001)
    try:
        answer = service.gateway.post(f"/recordings/{run_id}/stop")
        assert answer.status_code == 202, answer.text
        posted = _wait("the callback", lambda: _callback_for(service, 50001), 60, service.prefect)
    finally:
        room.stop()
    document = ResultDocument.model_validate(posted.json())
    assert sorted((f.UserId, f.Status) for f in document.Files) == [("guest", 1), ("host", 1)], document
    for entry in document.Files:
        assert "stopped on request" in entry.Message
        assert len(_stored(service, entry.RecordFile)) > 20_000


def test_cancelling_the_run_still_delivers_what_was_recorded(service: Service) -> None:
    room, run_id = _start_long_recording(service, 50002)
    try:
        with service.prefect.client_settings(), get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelling(message="cancelled by the test"), force=True)
        posted = _wait("the callback", lambda: _callback_for(service, 50002), 90, service.prefect)
    finally:
        room.stop()
    document = ResultDocument.model_validate(posted.json())
    assert sorted((f.UserId, f.Status) for f in document.Files) == [("guest", 1), ("host", 1)], document
    for entry in document.Files:
        assert "the run was cancelled" in entry.Message
        assert len(_stored(service, entry.RecordFile)) > 20_000
    status = _wait(
        "the run to be cancelled",
        lambda: (s := service.gateway.get(f"/recordings/{run_id}").json())["Final"] and s,
        60,
        service.prefect,
    )
    assert status["State"] == "Cancelled"


def test_no_secret_is_anywhere_on_disk_or_in_prefect(service: Service) -> None:
    """After every run above (recorded, stopped, cancelled): the UserSig, the COS SecretKey, the
    API key and the service key are in no file the service wrote (Prefect's database, results
    and logs, the work folders, the gateway's log), and in no artifact or parameter Prefect
    serves."""
    secrets = [USER_SIG, SECRET_KEY, API_KEY, service.service_key]
    files = [path for path in service.home.rglob("*") if path.is_file()]
    assert len(files) > 5 and any(p.suffix == ".db" for p in files), files
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, (secret[:6], path)
    with service.prefect.client_settings(), get_client(sync_client=True) as client:
        served = " ".join(
            [a.model_dump_json() for a in client.read_artifacts()]
            + [r.model_dump_json() for r in client.read_flow_runs()]
            + [log.message for log in client.read_logs()]
        )
    assert "Result document" in served and "sealed_secrets" in served
    for secret in secrets:
        assert secret not in served, secret[:6]
