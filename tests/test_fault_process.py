"""Processes that die mid-recording, in the service as deployed (a Prefect server and worker
running prefect.yaml's deployments, the gateway, a simulated room): SIGTERM to a run's process,
SIGKILL to it while its worker lives, and SIGKILL to the worker with its runs. Each time the
recording is delivered, playable, with the callback sent once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client

from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.sealing import new_service_key
from tests.gateway_process import free_port, gateway_process
from tests.http_receiver import Received, Receiver
from tests.media_check import decode_to_end, ffprobe
from tests.prefect_service import REPO_ROOT, PrefectService

APP = 1400000000
USER_SIG = "sig-FAULT-PROCESS-NEVER-STORE-71c2"
WAIT_SECONDS = 120.0
ROOM_PORT = free_port()

pytestmark = pytest.mark.timeout(400)


@dataclass
class Service:
    prefect: PrefectService
    gateway: httpx.Client
    callbacks: Receiver
    storage: Path
    work: Path

    def wait(self, what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}\n{self.prefect.logs()[-8000:]}")

    def callbacks_for(self, room: int) -> list[Received]:
        return [p for p in list(self.callbacks.received) if p.json()["RoomId"] == str(room)]

    def state(self, run_id: str) -> Any:
        with self.prefect.client_settings(), get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(run_id)).state


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("fault-process")
    service_key = new_service_key()
    settings = {
        "RECORDER_SERVICE_KEY": service_key,
        "RECORDER_SIM_ROOM_URL": f"http://127.0.0.1:{ROOM_PORT}",
        "RECORDER_WORK_DIR": str(home / "work"),
        "RECORDER_STORAGE_DIR": str(home / "recordings"),
        "RECORDER_POLL_SECONDS": "0.2",
    }
    gateway_env = {"RECORDER_SERVICE_KEY": service_key}
    with (
        Receiver() as callbacks,
        PrefectService(home / "prefect", settings) as prefect,
        gateway_process(prefect, home / "gateway.log", gateway_env) as gateway,
    ):
        yield Service(prefect, gateway, callbacks, home / "recordings", home / "work")


def _start_recording(service: Service, room_id: int) -> tuple[SimRoom, str]:
    """A room whose anchor publishes for two minutes, recorded for about six seconds, and the run's id."""
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=120)])
    room = SimRoom(APP, str(room_id), script, port=ROOM_PORT).start()
    request = {
        "SdkAppId": APP,
        "RoomId": room_id,
        "UserId": "recorder_fault",
        "UserSig": USER_SIG,
        "Mode": "02",
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "class-1250000000", "Path": "/faults"},
        "Callback": service.callbacks.url,
    }
    answer = service.gateway.post("/", json=request)
    assert answer.status_code == 202, answer.text
    run_id = answer.headers["x-request-id"]
    service.wait("the take", lambda: next(iter((service.work / run_id).glob("*/seg_*.ts")), None))
    time.sleep(6)
    return room, run_id


def _delivered(service: Service, room_id: int, why: str) -> ResultDocument:
    [posted] = service.wait("the callback", lambda: service.callbacks_for(room_id))
    document = ResultDocument.model_validate(posted.json())
    [entry] = document.Files
    assert (entry.UserId, entry.Status) == ("teacher", 1), entry
    assert why in entry.Message, entry.Message
    path = Path(entry.RecordFile.removeprefix("file://"))
    probed = ffprobe(path)
    assert (probed.codec("video"), probed.codec("audio")) == ("h264", "aac")
    assert probed.duration >= 5.0, probed.duration
    decode_to_end(path)
    return document


def test_sigterm_to_the_runs_process_ends_the_recording_and_delivers_it(service: Service) -> None:
    room, run_id = _start_recording(service, 60001)
    try:
        pids = service.wait("the run's process", lambda: service.prefect.flow_run_processes(run_id))
        for pid in reversed(pids):  # a machine shutting down asks every process to stop
            os.kill(pid, signal.SIGTERM)
        _delivered(service, 60001, "the recording process was told to stop (SIGTERM)")
    finally:
        room.stop()
    # The recordings ended as on a stop request and went through the whole pipeline.
    assert service.wait("the run's end", lambda: (s := service.state(run_id)).is_final() and s).is_completed()
    time.sleep(2)
    assert len(service.callbacks_for(60001)) == 1


def test_a_run_killed_while_its_worker_lives_is_recovered_automatically(service: Service) -> None:
    room, run_id = _start_recording(service, 60002)
    try:
        pids = service.wait("the run's process", lambda: service.prefect.flow_run_processes(run_id))
        for pid in reversed(pids):  # the process that records, and any that runs it
            os.kill(pid, signal.SIGKILL)
        # The worker reports the run Crashed and runs its on_crashed hook, which delivers.
        _delivered(service, 60002, "the recording process died")
    finally:
        room.stop()
    assert service.state(run_id).is_crashed()  # final: the result is on the run all the same
    status = service.gateway.get(f"/recordings/{run_id}").json()
    assert status["Final"] and status["Result"]["Files"][0]["Status"] == 1
    time.sleep(2)
    assert len(service.callbacks_for(60002)) == 1


def test_a_worker_killed_with_its_run_leaves_it_to_recover_before_the_next_worker(service: Service) -> None:
    room, run_id = _start_recording(service, 60003)
    try:
        service.prefect.kill_worker()  # the machine lost power: no hook, no report
        time.sleep(2)
        assert service.state(run_id).is_running()  # Prefect cannot know yet
        assert not service.callbacks_for(60003)
        # What a worker host runs when it comes back, before `prefect worker start`.
        recovered = subprocess.run(
            [sys.executable, "-m", "flows.cli", "recover"],
            cwd=REPO_ROOT,
            env=service.prefect.env()
            | {k: v for k, v in service.prefect.worker_env.items() if k.startswith("RECORDER_")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert recovered.returncode == 0, recovered.stderr[-3000:]
        assert run_id in recovered.stdout
        _delivered(service, 60003, "the recording process died")
    finally:
        room.stop()
        service.prefect.restart_worker()
    state = service.state(run_id)
    assert state.is_crashed() and "the recording process died" in (state.message or "")
    status = service.gateway.get(f"/recordings/{run_id}").json()
    assert status["Final"] and status["Result"]["Files"][0]["Status"] == 1
    time.sleep(2)
    assert len(service.callbacks_for(60003)) == 1
