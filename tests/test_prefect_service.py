"""Integration test of the service harness (tests/prefect_service.py): a real Prefect server,
the `recorders` work pool, the record-room deployment from prefect.yaml and a real worker, all on
loopback, run a flow run of the deployment in a flow process of their own. About 30 s."""

from __future__ import annotations

import time
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.deployments import run_deployment

from tests.prefect_service import DEPLOYMENT, POOL, REPO_ROOT, WORKER_NAME, PrefectService

RUN_SECONDS = 60.0

# Valid for the deployment's parameter schema, which the server enforces when the run is created,
# but not for the request model's own checks (Region, Bucket), which run in the flow process: the
# run fails there before it joins any room. That it fails *there* shows the worker started a flow
# process that imported flows/record_room.py from the project, not only that a process ran.
NOT_A_VALID_REQUEST = {
    "request": {
        "SdkAppId": 1400000000,
        "RoomId": 1234,
        "UserId": "recorder_test",
        "UserSig": "not-a-signature",
        "CosConfig": {"Region": "nowhere", "Bucket": "no bucket"},
    }
}


def test_the_worker_runs_a_flow_run_of_the_deployment(tmp_path: Path) -> None:
    with PrefectService(tmp_path / "prefect") as service, service.client_settings():
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(DEPLOYMENT)
            assert deployment.work_pool_name == POOL
            # `prefect deploy` ran in the project root, so flow runs start there.
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
            ]
            workers = {w.name: w.status for w in client.read_workers_for_work_pool(POOL)}
            assert workers == {WORKER_NAME: WorkerStatus.ONLINE}

            flow_run = run_deployment(DEPLOYMENT, parameters=NOT_A_VALID_REQUEST, timeout=0)
            assert isinstance(flow_run, FlowRun)  # called from sync code: the run, not a coroutine
            deadline = time.monotonic() + RUN_SECONDS
            state = flow_run.state
            while (state is None or not state.is_final()) and time.monotonic() < deadline:
                time.sleep(0.5)
                state = client.read_flow_run(flow_run.id).state

        assert state is not None and state.is_final(), f"{state} after {RUN_SECONDS:.0f} s\n{service.logs()}"
        assert state.is_failed(), f"{state}\n{service.logs()}"
        assert (state.message or "").startswith("Validation of flow parameters failed"), state.message
        assert "CosConfig.Region" in service.logs()  # the request model's check, in the flow process
