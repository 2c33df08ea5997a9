"""Delivering what a run recorded when its pipeline cannot: the run was cancelled, its
process died (the worker runs the crash hook), or its worker died too and
`recover-recordings` found it on disk.

The segments on disk are whole up to the moment recording stopped (every packet is
flushed as it arrives), and the run's journal lists its takes: each becomes its file, is
stored and gets its entry; the result document is published on the run and POSTed to the
Callback once."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.logging.loggers import flow_run_logger
from prefect.states import State

from flows.artifacts import publish_files_on
from flows.runs import publish_result
from recorder.callback import CallbackError, deliver_result
from recorder.recovery import DIED, mark_reported, read_run_record, reported, saved_result
from recorder.request import RecordingRequest
from recorder.result import ResultDocument
from recorder.rooms.trtc import RELAYS_FILE, stop_relays
from recorder.run_summary import file_rows, summary_markdown
from recorder.salvage import salvage_takes
from recorder.sealing import unseal_secrets
from recorder.settings import RecorderSettings
from recorder.storage import STORAGE_LABELS
from recorder.workspace import Workspace

CANCELLED = "the run was cancelled"
STOPPED = "the recording process was stopped"
# The record tasks look for a stop request twice a second: give them that long to close
# their segments before the segments are read (only when they run in this very process).
STOP_GRACE_SECONDS = 1.5
DELIVERY_LOCK = ".delivery.lock"


def deliver_interrupted(
    run_id: UUID | None,
    run_dir: Path,
    request: RecordingRequest,
    settings: RecorderSettings,
    why: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> ResultDocument | None:
    """Deliver the run's takes, publish the result and POST it once; None when another
    delivery of the same run got there first."""
    with _delivery_lock(run_dir) as first:
        if not first:
            logger.info("the run's result was reported already: nothing to deliver")
            return None
        return _deliver(run_id, run_dir, request, settings, why, logger)


@contextmanager
def _delivery_lock(run_dir: Path) -> Iterator[bool]:
    """One delivery per run, whoever tries (a hook, `recorder recover`): True for the one
    that should deliver."""
    if not run_dir.is_dir():
        yield False  # delivered and cleaned up already
        return
    with open(run_dir / DELIVERY_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield not reported(run_dir)


def _deliver(
    run_id: UUID | None,
    run_dir: Path,
    request: RecordingRequest,
    settings: RecorderSettings,
    why: str,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> ResultDocument:
    workspace = Workspace(run_dir)
    # If any recording is still running in this process, it ends now.
    workspace.request_stop(why)
    if workspace.closed_reason() is None:
        workspace.close(why)
    relays = run_dir / RELAYS_FILE
    if relays.exists():
        for problem in stop_relays(settings, request.SdkAppId, relays):
            logger.error("TRTC relay not stopped: %s", problem)
    started_at = min((take.started_at for take in workspace.takes()), default=datetime.now(UTC))
    delivered = salvage_takes(workspace, request, settings, why)
    entries = [entry for take in delivered for entry in take.entries]
    rows = [row for take in delivered for row in file_rows(request.Mode, take.entries, take.reports, None)]
    saved = saved_result(run_dir)
    if saved is not None:
        # The run made its result but could not deliver it: its stored files are in it (and
        # no longer on disk); the takes left on disk were not stored, and are delivered now.
        on_disk = {entry.UserId for entry in entries}
        kept = [f for f in saved.Files if f.Status == 1 or f.UserId not in on_disk]
        entries = kept + entries
        rows = file_rows(request.Mode, kept, None, None) + rows
    document = ResultDocument.for_request(request, entries)
    logger.info("%s: delivered %d of %d recording(s)", why, len(entries) - len(document.failed), len(entries))
    if run_id is not None:
        try:
            with get_client(sync_client=True) as client:
                publish_result(client, run_id, document)
                summary = summary_markdown(
                    request, STORAGE_LABELS[settings.storage], started_at, datetime.now(UTC), why, rows
                )
                publish_files_on(client, run_id, rows, summary)
        # The API being away must not keep the document from its Callback.
        except Exception as exc:
            logger.error("could not publish the result on the run: %s", exc)
    if request.Callback is not None:
        try:
            deliver_result(
                str(request.Callback),
                document,
                settings,
                run_id=str(run_id) if run_id else None,
                logger=logger,
            )
        except CallbackError as exc:
            logger.error("callback failed: %s", exc)
            return document
    mark_reported(run_dir, why)
    workspace.discard_if_done()
    return document


def _from_parameters(run: FlowRun, settings: RecorderSettings) -> RecordingRequest:
    request = RecordingRequest.model_validate(run.parameters["request"])
    sealed = run.parameters.get("sealed_secrets")
    return unseal_secrets(request, sealed, settings.service_key) if sealed else request


def deliver_after_cancellation(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """A Prefect on_cancellation hook (it runs in the worker, after the run's process)."""
    settings = RecorderSettings()
    run_dir = (settings.work_root / str(flow_run.id)).resolve()
    deliver_interrupted(
        flow_run.id,
        run_dir,
        _from_parameters(flow_run, settings),
        settings,
        CANCELLED,
        flow_run_logger(flow_run, flow),
    )


def deliver_after_crash(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """A Prefect on_crashed hook. It runs in the worker when the run's process died (killed,
    out of memory), and in the run's own process when Prefect turns a signal there into a
    crash: either way the recordings are delivered from disk. A worker that dies with its
    runs runs no hook: `recorder recover` is for that."""
    settings = RecorderSettings()
    run_dir = (settings.work_root / str(flow_run.id)).resolve()
    if not run_dir.is_dir():
        return  # it crashed before it joined: nothing was recorded
    record = read_run_record(run_dir)
    in_the_runs_process = record is not None and record.owner.pid == os.getpid()
    why = STOPPED if in_the_runs_process else DIED
    if in_the_runs_process:
        Workspace(run_dir).request_stop(why)
        time.sleep(STOP_GRACE_SECONDS)
    deliver_interrupted(
        flow_run.id,
        run_dir,
        _from_parameters(flow_run, settings),
        settings,
        why,
        flow_run_logger(flow_run, flow),
    )
