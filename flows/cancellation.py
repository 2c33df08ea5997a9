"""What happens when a recording run is cancelled (from the Prefect UI or API).

The worker stops the run's process, then runs this hook: the recordings on disk are whole
up to that moment, so they are converted, stored and reported like any others, their
Messages saying the run was cancelled."""

from __future__ import annotations

from typing import Any

from prefect import Flow, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.logging.loggers import flow_run_logger
from prefect.states import State

from flows.runs import publish_result
from recorder.callback import CallbackError, post_result
from recorder.request import RecordingRequest
from recorder.result import ResultDocument
from recorder.rooms.trtc import RELAYS_FILE, stop_relays
from recorder.salvage import deliver_takes
from recorder.sealing import unseal_secrets
from recorder.settings import RecorderSettings
from recorder.workspace import Workspace

CANCELLED = "the run was cancelled"


def deliver_after_cancellation(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """A Prefect on_cancellation hook (it runs in the worker, after the run's process)."""
    run = flow_run
    logger = flow_run_logger(run, flow)
    settings = RecorderSettings()
    request = RecordingRequest.model_validate(run.parameters["request"])
    sealed = run.parameters.get("sealed_secrets")
    if sealed:
        request = unseal_secrets(request, sealed, settings.service_key)
    workspace = Workspace((settings.work_root / str(run.id)).resolve())
    # If any recording is still running in this process, it ends now.
    workspace.request_stop(CANCELLED)
    if workspace.closed_reason() is None:
        workspace.close(CANCELLED)
    relays = workspace.root / RELAYS_FILE
    if relays.exists():
        for problem in stop_relays(settings, request.SdkAppId, relays):
            logger.error("TRTC relay not stopped: %s", problem)
    entries = deliver_takes(workspace, request, settings, CANCELLED)
    document = ResultDocument.for_request(request, entries)
    logger.info(
        "cancelled: delivered %d of %d recording(s)", len(entries) - len(document.failed), len(entries)
    )
    with get_client(sync_client=True) as client:
        publish_result(client, run.id, document)
    if request.Callback is not None:
        try:
            post_result(
                str(request.Callback),
                document,
                attempts=settings.callback_attempts,
                timeout=settings.callback_timeout_seconds,
                backoff=settings.callback_backoff_seconds,
            )
        except CallbackError as exc:
            logger.error("callback failed: %s", exc)
            return
    workspace.discard_if_done()
