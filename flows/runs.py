"""The service's side of Prefect: start, find, stop and read runs of the record-room
deployment. The gateway speaks HTTP; everything it asks of Prefect is here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from uuid import UUID

from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort

from recorder.request import RecordingRequest
from recorder.result import ResultDocument
from recorder.sealing import public_parameters, seal_secrets
from recorder.settings import RecorderSettings

# Added to a flow run's tags by a stop request; the run looks for it while it watches.
STOP_TAG = "stop-requested"
RESULT_DESCRIPTION = "Result document"
_JSON_FENCE = "```json\n"


class RunFinishedError(RuntimeError):
    """The run is over: there is nothing left to stop."""


def recording_tag(request: RecordingRequest) -> str:
    """One tag per (SdkAppId, room, recorder UserId): the identity of "the same recording".
    Hashed, since room ids may hold characters tags should not."""
    identity = f"{request.SdkAppId}/{request.room}/{request.UserId}"
    return "recording-" + hashlib.sha256(identity.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Started:
    run_id: UUID
    already_running: bool


async def start_recording(
    client: PrefectClient, request: RecordingRequest, settings: RecorderSettings
) -> Started:
    """A run of the deployment for this request, or the one already recording it.

    While a run for the same SdkAppId, room and UserId is not final, that run is the
    answer. Otherwise a new run is created with an idempotency key naming the last
    finished run, so two gateways racing on the same request create one run between them."""
    deployment = await client.read_deployment_by_name(settings.deployment)
    tag = recording_tag(request)
    earlier = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=20,
    )
    active = [run for run in earlier if run.state is not None and not run.state.is_final()]
    if active:
        return Started(active[0].id, already_running=True)
    after = str(earlier[0].id) if earlier else "none"
    sealed = seal_secrets(request, settings.service_key)
    run = await client.create_flow_run_from_deployment(
        deployment.id,
        parameters={"request": public_parameters(request), "sealed_secrets": sealed},
        tags=[tag],
        idempotency_key=f"{tag}:after:{after}",
    )
    # The idempotency key handed back a run another request created: its seal differs
    # (every seal has its own random IV).
    return Started(run.id, already_running=run.parameters.get("sealed_secrets") != sealed)


async def request_stop(client: PrefectClient, run_id: UUID) -> str:
    """Ask the run to end its recording and deliver; returns its state's name."""
    run = await client.read_flow_run(run_id)
    if run.state is not None and run.state.is_final():
        raise RunFinishedError(f"run {run_id} is already {run.state.name}")
    if STOP_TAG not in run.tags:
        await client.update_flow_run(run_id, tags=[*run.tags, STOP_TAG])
    return run.state_name or "Unknown"


def stop_requested(client: SyncPrefectClient, run_id: UUID) -> bool:
    return STOP_TAG in client.read_flow_run(run_id).tags


@dataclass(frozen=True)
class RecordingStatus:
    run_id: UUID
    state: str
    final: bool
    result: ResultDocument | None
    # Waiting for a worker with room for one more recording (every worker is at its limit).
    queued: bool = False


async def read_recording(client: PrefectClient, run_id: UUID) -> RecordingStatus:
    """The run's state and, once it has one, its result document."""
    run = await client.read_flow_run(run_id)
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])),
        sort=ArtifactSort.CREATED_DESC,
    )
    result = None
    for artifact in artifacts:
        if artifact.description == RESULT_DESCRIPTION and isinstance(artifact.data, str):
            result = ResultDocument.model_validate_json(_fenced_json(artifact.data))
            break
    final = run.state is not None and run.state.is_final()
    queued = run.state is not None and (run.state.is_scheduled() or run.state.is_pending())
    return RecordingStatus(run_id, run.state_name or "Unknown", final, result, queued)


def publish_result(client: SyncPrefectClient, run_id: UUID, document: ResultDocument) -> None:
    """The result document as an artifact of the run: shown in the UI, read by the gateway."""
    rows = "\n".join(
        f"| {f.UserId} | {'ok' if f.Status == 1 else 'failed'} | {f.RecordFile or '-'} | {f.Message} |"
        for f in document.Files
    )
    markdown = (
        f"| anchor | status | file | message |\n|---|---|---|---|\n{rows}\n\n"
        f"{_JSON_FENCE}{json.dumps(document.model_dump(mode='json'), indent=2, ensure_ascii=False)}\n```\n"
    )
    client.create_artifact(
        ArtifactCreate(type="markdown", data=markdown, description=RESULT_DESCRIPTION, flow_run_id=run_id)
    )


def _fenced_json(markdown: str) -> str:
    start = markdown.index(_JSON_FENCE) + len(_JSON_FENCE)
    return markdown[start : markdown.index("\n```", start)]
