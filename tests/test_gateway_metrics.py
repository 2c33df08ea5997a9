"""GET /metrics: Prometheus metrics read from a real (temporary) Prefect API.

The counters are moved by real flow runs named record-room (artifacts, failing tasks, a run
that waits while it is scraped) and by real requests to the gateway; the exposition text is
parsed with prometheus_client's own parser. Other tests of this worker share the API, so the
checks are on deltas."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from prefect import flow, get_client, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from prefect.states import Completed
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from deployments.gateway import REQUEST_ID_HEADER, create_app
from deployments.metrics import GatewayMetrics
from flows.artifacts import FILES_TABLE_DESCRIPTION
from recorder.sealing import new_service_key
from recorder.settings import RecorderSettings

API_KEY = "metrics-key-7c8d9e"
USER_SIG = "sig-METRICS-NEVER-1f2e"
WAIT_SECONDS = 30.0


@pytest.fixture
def settings(deployment_id: UUID) -> RecorderSettings:
    return RecorderSettings(service_key=SecretStr(new_service_key()), api_keys=SecretStr(API_KEY))


def _gateway(settings: RecorderSettings, metrics: GatewayMetrics | None = None) -> TestClient:
    client = TestClient(create_app(settings, metrics))
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


@pytest.fixture
def gateway(settings: RecorderSettings) -> Iterator[TestClient]:
    with _gateway(settings) as client:
        yield client


def _scrape(gateway: TestClient) -> dict[str, float]:
    """Every sample of one scrape, by name and labels: `name` or `name{label="value"}`."""
    answer = gateway.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = ",".join(f'{name}="{value}"' for name, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_SECONDS} s: {what}")
        time.sleep(0.2)


def _task_runs(flow_run_id: UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run for run in runs}


def _files_row(anchor: str, size_bytes: int) -> dict[str, Any]:
    return {
        "anchor": anchor,
        "mode": "02",
        "seconds": 3.0,
        "size_bytes": size_bytes,
        "codecs": "h264/aac",
        "resolution": "1280x720",
        "status": 1 if size_bytes else 0,
        "message": "" if size_bytes else "nothing was recorded",
        "link": f"file:///recordings/{anchor}.mp4",
        "previews": "",
    }


@flow(name="record-room")
def finished_recording(sizes: list[int], tables: int = 1) -> None:
    """What a finished run leaves: `tables` "Recorded files" tables of these sizes, and other
    artifacts that must not count."""
    for _ in range(tables):
        rows = [_files_row(f"anchor-{n}", size) for n, size in enumerate(sizes)]
        create_table_artifact(table=rows, description=FILES_TABLE_DESCRIPTION)
    create_table_artifact(table=[{"size_bytes": 10**12}], description="Another table")
    create_markdown_artifact("| size_bytes |\n|---|\n| 1000000 |", description=FILES_TABLE_DESCRIPTION)


def test_recorded_bytes_move_by_the_files_tables_of_finished_runs(gateway: TestClient) -> None:
    before = _scrape(gateway)["recorder_recorded_bytes_total"]
    finished_recording([1_000_003, 0, 250_000])
    finished_recording([7])
    after = _scrape(gateway)
    assert after["recorder_recorded_bytes_total"] - before == 1_250_010
    assert after["recorder_prefect_api_up"] == 1
    # Each artifact is summed once: a scrape with nothing new adds nothing.
    assert _scrape(gateway)["recorder_recorded_bytes_total"] == after["recorder_recorded_bytes_total"]


def test_artifacts_are_read_incrementally_and_a_fresh_gateway_sums_all_history(
    settings: RecorderSettings,
) -> None:
    # Pages of 10 and no overlap window, so a few dozen artifacts show the paging and its end.
    incremental = GatewayMetrics(page_size=10, overlap=timedelta(0))
    recorded = incremental.reader.recorded_bytes
    with _gateway(settings, incremental) as gateway:
        finished_recording([100], tables=25)
        first = _scrape(gateway)["recorder_recorded_bytes_total"]
        assert recorded.last_read_count >= 25 + 2  # the first scrape reads all history
        assert _scrape(gateway)["recorder_recorded_bytes_total"] == first
        assert recorded.last_read_count <= 10  # later ones: the first page only
        finished_recording([3, 4], tables=12)
        second = _scrape(gateway)["recorder_recorded_bytes_total"]
        assert second - first == 12 * 7
        assert recorded.last_read_count <= 20
    # A gateway started now (its first scrape) sums the whole history to the same total.
    with _gateway(settings) as fresh:
        assert _scrape(fresh)["recorder_recorded_bytes_total"] == second


def test_a_read_that_outlasts_its_scrape_goes_on_for_the_next(settings: RecorderSettings) -> None:
    finished_recording([5], tables=30)
    # No scrape waits long enough for the first read (some pages of history).
    metrics = GatewayMetrics(page_size=10, overlap=timedelta(0), timeout=0.001)
    recorded = metrics.reader.recorded_bytes
    with _gateway(settings, metrics) as gateway:
        first = _scrape(gateway)
        assert first["recorder_prefect_api_up"] == 0 and "recorder_recorded_bytes_total" not in first
        # With no scrape since, the read finishes on its own...
        _eventually(lambda: recorded.last_read_count > 0, "the read that outlasted its scrape is done")
        assert recorded.last_read_count >= 30
        # ...and the next scrape answers with it (how much it reads again is not checked here:
        # under load it was once all of history, see the issue 9 note).
        metrics.read_timeout = 10.0
        second = _scrape(gateway)
        assert second["recorder_prefect_api_up"] == 1
    with _gateway(settings) as fresh:
        assert _scrape(fresh)["recorder_recorded_bytes_total"] == second["recorder_recorded_bytes_total"]


@task(name="upload", task_run_name="upload-{anchor}")
def failing_upload(anchor: str) -> str:
    raise OSError(f"storage refused {anchor}")


_flaky_attempts: list[str] = []


@task(name="upload", task_run_name="upload-{anchor}", retries=1, retry_delay_seconds=0)
def flaky_upload(anchor: str) -> str:
    _flaky_attempts.append(anchor)
    if len(_flaky_attempts) == 1:
        raise OSError("storage refused, once")
    return f"file:///recordings/{anchor}.mp4"


@task(name="callback")
def failing_callback() -> int:
    raise ConnectionError("the callback receiver is down")


# The recording of an anchor whose UserId is "upload-z": its name holds "upload-", it is no upload.
@task(name="record", task_run_name="record-{anchor}")
def failing_record(anchor: str) -> None:
    raise TimeoutError(f"{anchor}: the stream never came")


@flow(name="record-room")
def recording_with_failures() -> UUID:
    failing_upload("x", return_state=True)
    flaky_upload("y")
    failing_callback(return_state=True)
    failing_record("upload-z", return_state=True)
    return UUID(str(flow_run.get_id()))


def test_final_upload_and_callback_failures_count_retried_attempts_do_not(gateway: TestClient) -> None:
    before = _scrape(gateway)
    _flaky_attempts.clear()
    run_id = recording_with_failures()

    # Task run states reach the API as events: wait until all three are there, final.
    def recorded() -> bool:
        runs = _task_runs(run_id)
        states = {name: run.state.type if run.state else None for name, run in runs.items()}
        callbacks = [state for name, state in states.items() if name.startswith("callback-")]
        return (
            states.get("upload-x") == StateType.FAILED
            and states.get("upload-y") == StateType.COMPLETED
            and callbacks == [StateType.FAILED]
            and states.get("record-upload-z") == StateType.FAILED
        )

    _eventually(recorded, "the task runs' final states in the API")
    assert _task_runs(run_id)["upload-y"].run_count == 2  # it did fail once, then retried
    after = _scrape(gateway)
    assert after["recorder_upload_failures_total"] - before["recorder_upload_failures_total"] == 1
    assert after["recorder_callback_failures_total"] - before["recorder_callback_failures_total"] == 1


def test_a_running_recording_is_active_while_it_runs(gateway: TestClient) -> None:
    release = threading.Event()
    started: list[UUID] = []

    @flow(name="record-room")
    def waiting_recording() -> None:
        started.append(UUID(str(flow_run.get_id())))
        release.wait(WAIT_SECONDS)

    before = _scrape(gateway)["recorder_active_recordings"]
    runner = threading.Thread(target=waiting_recording, daemon=True)
    runner.start()
    try:

        def running() -> bool:
            if not started:
                return False
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(started[0]).state
            return state is not None and state.type == StateType.RUNNING

        _eventually(running, "the waiting flow run is RUNNING")
        assert _scrape(gateway)["recorder_active_recordings"] == before + 1
    finally:
        release.set()
        runner.join(WAIT_SECONDS)
    assert not runner.is_alive()
    assert _scrape(gateway)["recorder_active_recordings"] == before


def test_requests_accepted_and_refused_are_counted(gateway: TestClient) -> None:
    before = _scrape(gateway)
    not_json = gateway.post("/", content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    no_key = gateway.post("/recordings", json={}, headers={"Authorization": "Bearer wrong"})
    assert no_key.status_code == 401
    request = {
        "SdkAppId": 1400000000,
        "RoomId": 8301,
        "UserId": "recorder_metrics",
        "UserSig": USER_SIG,
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "class-1250000000"},
        "Callback": "http://127.0.0.1:9/never-called",
        "Mode": "02",
    }
    accepted = gateway.post("/recordings", json=request)
    assert accepted.status_code == 202, accepted.text
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(accepted.headers[REQUEST_ID_HEADER]), Completed(), force=True)
    gateway.get("/health")  # not a recording request: not counted
    after = _scrape(gateway)
    accepted_key = 'recorder_requests_total{outcome="accepted"}'
    refused_key = 'recorder_requests_total{outcome="refused"}'
    assert after[accepted_key] - before[accepted_key] == 1
    assert after[refused_key] - before[refused_key] == 2
    assert USER_SIG not in gateway.get("/metrics").text


def test_metrics_need_the_api_key_when_keys_are_set(gateway: TestClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-a-key"}):
        assert gateway.get("/metrics", headers=headers).status_code == 401
    assert gateway.get("/metrics", headers={"X-Api-Key": API_KEY}).status_code == 200


def _client_of(port: int) -> Callable[[], PrefectClient]:
    return lambda: PrefectClient(f"http://127.0.0.1:{port}/api", httpx_settings={"timeout": 1.0})


def test_an_unreachable_api_is_api_up_0_at_once(settings: RecorderSettings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = int(probe.getsockname()[1])
    with _gateway(settings, GatewayMetrics(_client_of(closed_port), timeout=2.0)) as gateway:
        gateway.post("/", content=b"{nope", headers={"Content-Type": "application/json"})
        started = time.monotonic()
        samples = _scrape(gateway)
        # Prefect's transport retries a refused connection a few times (about 1.5 s in all);
        # the timeout bounds it.
        assert time.monotonic() - started < 2.0 + 1.0
    assert samples["recorder_prefect_api_up"] == 0
    assert samples['recorder_requests_total{outcome="refused"}'] == 1
    assert not any(
        name.startswith(("recorder_active", "recorder_recorded", "recorder_upload")) for name in samples
    )


def test_an_api_that_never_answers_is_api_up_0_within_the_timeout(settings: RecorderSettings) -> None:
    # Connections are taken (the kernel's backlog) and never answered.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = int(silent.getsockname()[1])
        metrics = GatewayMetrics(
            lambda: PrefectClient(f"http://127.0.0.1:{port}/api", httpx_settings={"timeout": 30.0}),
            timeout=1.5,
        )
        with _gateway(settings, metrics) as gateway:
            started = time.monotonic()
            samples = _scrape(gateway)
            elapsed = time.monotonic() - started
    assert samples["recorder_prefect_api_up"] == 0
    assert 1.5 <= elapsed < 4.0
