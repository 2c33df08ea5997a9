"""Several workers on one pool, a Prefect server on PostgreSQL: each worker holds at most its
capacity of recordings (`prefect worker start --limit N`), a request beyond the total waits
in the queue (the gateway says so), and every request is delivered once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.sealing import new_service_key
from tests.gateway_process import free_port, gateway_process
from tests.http_receiver import Receiver
from tests.postgres import PostgresServer
from tests.prefect_service import PrefectService

pytestmark = pytest.mark.timeout(600)

CAPACITY = {"worker-a": 5, "worker-b": 5}
REQUESTS = 20
RECORD_SECONDS = 4.0  # each recording is stopped this long after it started
ROOM_ID = 61000
ROOM_PORT = free_port()
WAIT_SECONDS = 300.0


@dataclass
class Cluster:
    prefect: PrefectService
    gateway: httpx.Client
    callbacks: Receiver
    room: SimRoom


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("scale")
    service_key = new_service_key()
    # The anchors stay on air for the whole test: every request, however long it waited in
    # the queue, finds them and records until it is stopped.
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=3600.0, width=160, height=120)])
    worker_env = {
        "RECORDER_SERVICE_KEY": service_key,
        "RECORDER_SIM_ROOM_URL": f"http://127.0.0.1:{ROOM_PORT}",
        "RECORDER_WORK_DIR": str(home / "work"),
        "RECORDER_STORAGE_DIR": str(home / "recordings"),
        "RECORDER_POLL_SECONDS": "0.2",
        "RECORDER_PREVIEWS": "false",
    }
    with (
        PostgresServer() as postgres,
        Receiver() as callbacks,
        SimRoom(1400000000, str(ROOM_ID), script, port=ROOM_PORT) as room,
        PrefectService(
            home / "prefect", worker_env, database_url=postgres.url, workers=dict(CAPACITY)
        ) as prefect,
        gateway_process(prefect, home / "gateway.log", {"RECORDER_SERVICE_KEY": service_key}) as gateway,
    ):
        yield Cluster(prefect, gateway, callbacks, room)


def _request(n: int, callback: str) -> dict[str, Any]:
    return {
        "SdkAppId": 1400000000,
        "RoomId": ROOM_ID,
        "UserId": f"recorder_{n}",
        "UserSig": "sig-scale-NEVER-STORE",
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "scale-1250000000", "Path": "/scale"},
        "Mode": "00",
        "Callback": callback,
    }


@dataclass
class Watch:
    """What the test saw of the runs, sampled from the Prefect API and the gateway."""

    most_per_worker: dict[str, int] = field(default_factory=dict)
    most_queued: int = 0  # requests the gateway said were queued, at one moment
    running_since: dict[str, float] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)


def _sample(cluster: Cluster, ids: list[str], watch: Watch) -> None:
    for worker, run_ids in _running_by_worker(cluster).items():
        watch.most_per_worker[worker] = max(watch.most_per_worker.get(worker, 0), len(run_ids))
        for run_id in run_ids:
            watch.running_since.setdefault(run_id, time.monotonic())
    queued = 0
    for run_id in ids:
        if run_id in watch.stopped:
            continue
        status = cluster.gateway.get(f"/recordings/{run_id}").json()
        queued += bool(status["Queued"])
        since = watch.running_since.get(run_id)
        if since is not None and time.monotonic() - since >= RECORD_SECONDS:
            answer = cluster.gateway.post(f"/recordings/{run_id}/stop")
            assert answer.status_code in (202, 409), answer.text
            watch.stopped.add(run_id)
    watch.most_queued = max(watch.most_queued, queued)


def test_each_worker_holds_at_most_its_capacity_and_the_rest_wait_in_the_queue(cluster: Cluster) -> None:
    ids = []
    submitted = time.monotonic()
    for n in range(REQUESTS):
        answer = cluster.gateway.post("/", json=_request(n, cluster.callbacks.url))
        assert answer.status_code == 202, answer.text
        ids.append(answer.headers["x-request-id"])
    watch = Watch()
    deadline = time.monotonic() + WAIT_SECONDS
    while len(cluster.callbacks.received) < REQUESTS and time.monotonic() < deadline:
        _sample(cluster, ids, watch)
        time.sleep(0.5)

    assert len(cluster.callbacks.received) == REQUESTS, cluster.prefect.logs()[-6000:]
    documents = [ResultDocument.model_validate(posted.json()) for posted in cluster.callbacks.received]
    assert sorted(d.UserId for d in documents) == sorted(f"recorder_{n}" for n in range(REQUESTS))
    assert all([(f.UserId, f.Status) for f in d.Files] == [("teacher", 1)] for d in documents), documents
    # No worker ever held more than its capacity; both took part; some requests waited.
    assert set(watch.most_per_worker) <= set(CAPACITY), watch.most_per_worker
    assert all(watch.most_per_worker[w] <= CAPACITY[w] for w in watch.most_per_worker), watch.most_per_worker
    assert set(watch.most_per_worker) == set(CAPACITY), watch.most_per_worker
    # Beyond the total capacity, requests waited (and the gateway said so).
    assert watch.most_queued >= REQUESTS - sum(CAPACITY.values()), watch.most_queued
    admitted = _admission(cluster, ids)
    print(
        f"most per worker {watch.most_per_worker}; at most {watch.most_queued} queued at once; "
        f"{admitted}; all {REQUESTS} delivered {time.monotonic() - submitted:.0f} s after the first request"
    )


def test_a_worker_lost_with_its_recordings_still_delivers_every_request_once(cluster: Cluster) -> None:
    # Last in this file: it kills worker-b for good. Its recordings die with it (a machine
    # that lost power); Prefect sees their heartbeats stop and runs recover-recordings on
    # the surviving worker, which delivers them from the shared work folder.
    first = len(cluster.callbacks.received)
    ids = []
    for n in range(REQUESTS):
        answer = cluster.gateway.post("/", json=_request(100 + n, cluster.callbacks.url))
        assert answer.status_code == 202, answer.text
        ids.append(answer.headers["x-request-id"])
    watch = Watch()
    deadline = time.monotonic() + WAIT_SECONDS
    killed_runs: list[str] = []
    # Nothing is stopped until worker-b is full (the anchors stay on air): then it is killed
    # holding as many recordings as it may, each a few seconds long.
    while time.monotonic() < deadline:
        on_b = _running_by_worker(cluster).get("worker-b", [])
        if len(on_b) == CAPACITY["worker-b"] and _recording_for(cluster, on_b, RECORD_SECONDS / 2):
            killed_runs = on_b
            cluster.prefect.kill_worker("worker-b")
            break
        time.sleep(0.5)
    assert killed_runs, "worker-b never ran its capacity"
    killed_at = time.monotonic()
    while len(cluster.callbacks.received) - first < REQUESTS and time.monotonic() < deadline:
        _sample(cluster, [i for i in ids if i not in killed_runs], watch)
        time.sleep(0.5)
    delivered_at = time.monotonic()
    time.sleep(5)  # a second delivery of any of them would come now

    posted = [ResultDocument.model_validate(p.json()) for p in cluster.callbacks.received[first:]]
    assert sorted(d.UserId for d in posted) == sorted(f"recorder_{100 + n}" for n in range(REQUESTS)), (
        cluster.prefect.logs()[-8000:]
    )
    assert all([(f.UserId, f.Status) for f in d.Files] == [("teacher", 1)] for d in posted), posted
    died = [d for d in posted if "the recording process died" in d.Files[0].Message]
    assert len(died) == len(killed_runs), [d.Files[0].Message for d in posted]
    print(
        f"killed {len(killed_runs)} recording(s) with worker-b; every request delivered once, "
        f"the last {delivered_at - killed_at:.0f} s after the kill"
    )


def _recording_for(cluster: Cluster, run_ids: list[str], seconds: float) -> bool:
    """Each of these runs has had its recording task running for at least `seconds` (a run
    is Running seconds before it records: its process imports, joins the room)."""
    with cluster.prefect.client_settings(), get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in run_ids]))
        )
    started = {
        str(t.flow_run_id): t.start_time for t in tasks if t.name.startswith("record-") and t.start_time
    }
    now = datetime.now(UTC)
    return all(i in started and (now - started[i]).total_seconds() >= seconds for i in run_ids)


def _running_by_worker(cluster: Cluster) -> dict[str, list[str]]:
    with cluster.prefect.client_settings(), get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["record-room"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
    found: dict[str, list[str]] = {}
    for run in running:
        pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1]) if run.infrastructure_pid else 0
        found.setdefault(cluster.prefect.worker_of(pid) or "unknown", []).append(str(run.id))
    return found


def _admission(cluster: Cluster, ids: list[str]) -> str:
    """From Prefect's own times: request (the run's creation) to its first recording task's
    start, median and worst, and the rate runs were admitted at."""
    with cluster.prefect.client_settings(), get_client(sync_client=True) as client:
        waits, starts = [], []
        for run_id in ids:
            run = client.read_flow_run(UUID(run_id))
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            recording = [t.start_time for t in tasks if t.name.startswith("record-") and t.start_time]
            if run.created and recording:
                waits.append((min(recording) - run.created).total_seconds())
            if run.start_time:
                starts.append(run.start_time)
    waits.sort()
    span = (max(starts) - min(starts)).total_seconds() if len(starts) > 1 else 0.0
    rate = (len(starts) - 1) / span * 60 if span else float("nan")
    return (
        f"request to recording: best {waits[0]:.1f} s, median {waits[len(waits) // 2]:.1f} s, "
        f"worst {waits[-1]:.1f} s "
        f"({len(waits)} runs); admitted {rate:.1f} runs/min"
    )
