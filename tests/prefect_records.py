"""What Prefect recorded about a flow run: its task runs, and that no secret is among it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_LOCAL_STORAGE_PATH
from prefect.states import State


def task_run_states(state: State[Any]) -> dict[str, list[str]]:
    """Task run name -> the final state names of its runs (one per flow run attempt)."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    names: dict[str, list[str]] = {}
    for run in task_runs:
        names.setdefault(run.name, []).append(run.state_name or "")
    return names


def assert_secrets_absent(flow_run_id: UUID, secrets: list[str], *, expect_in_logs: str) -> None:
    """Parameters, logs, the API database and persisted results: none holds a secret.

    `expect_in_logs` must be in the logs, so the check is known to look at real logs."""
    APILogWorker.drain_all(timeout=5)  # logs reach the API in batches; send what is waiting
    only_this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        logs = json.dumps([log.message for log in client.read_logs(only_this_run)])
    assert expect_in_logs in logs
    stored = json.dumps(run.parameters, default=str) + logs
    for secret in secrets:
        assert secret not in stored, secret
    database = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///")[-1])
    results = [p for p in Path(PREFECT_LOCAL_STORAGE_PATH.value()).rglob("*") if p.is_file()]
    assert database.is_file() and results  # the check below looks at real files
    for path in [database, *results]:
        if path.is_file():
            content = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in content, (secret, path)
