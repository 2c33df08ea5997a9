"""`recover-recordings`: finish the recordings whose process died (killed, out of memory,
the machine lost power) from what they left on disk.

A run whose process dies while its worker lives is delivered by the flow's on_crashed hook,
in the worker. This is for the rest: a worker that died with its runs (the machine lost
power). It runs on that machine, since the media is on its disk: `recorder recover` before
the worker starts again, or the deployment of the same name. A run whose process is alive
is left alone; one whose result is out already is too (its `reported.json`)."""

from __future__ import annotations

import fcntl
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.states import Crashed

from flows.interrupted import deliver_interrupted
from recorder.recovery import DIED, unfinished_runs
from recorder.sealing import unseal_secrets
from recorder.settings import RecorderSettings

LOCK_FILE = ".recover.lock"


@flow(name="recover-recordings")
def recover_recordings(flow_run_id: str | None = None) -> list[str]:
    """Deliver every unfinished recording of this machine; the flow run ids it finished.

    `flow_run_id`: a run Prefect saw lose its process (its heartbeats stopped: the trigger
    in prefect.yaml passes it). It is delivered from the shared work folder even when it
    was recorded on another machine, whose processes this one cannot see."""
    logger = get_run_logger()
    settings = RecorderSettings()
    root = settings.work_root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    finished: list[str] = []
    # One recovery at a time on this machine: two would deliver the same takes twice.
    with open(root / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lost = {flow_run_id} if flow_run_id else set()
        if flow_run_id:
            logger.info("run %s stopped sending heartbeats", flow_run_id)
        for record in unfinished_runs(root, lost):
            run_dir = root / record.run_id
            request = record.recording_request()
            if record.sealed_secrets:
                request = unseal_secrets(request, record.sealed_secrets, settings.service_key)
            run_id = _uuid(record.run_id)
            logger.info("run %s: %s; delivering what it recorded", record.run_id, DIED)
            if run_id is not None:
                _mark_crashed(run_id)
            document = deliver_interrupted(run_id, run_dir, request, settings, DIED, logger)
            if document is None:
                continue  # delivered by another (a crash hook) meanwhile
            finished.append(record.run_id)
    logger.info("recovered %d recording(s)", len(finished))
    return finished


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None  # a folder of a run started without Prefect's id


def _mark_crashed(run_id: UUID) -> None:
    """A run whose process died without a word is still Running in Prefect: say it crashed."""
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except Exception:
            return  # not known to this Prefect API (a run of another, or a temporary one)
        if run.state is not None and not run.state.is_final():
            # Crashed is final: nothing waits for this run any more. Its result document, once
            # delivered, is on the run as its artifact, like any run's.
            message = f"{DIED}; its recordings are delivered from disk by recover-recordings"
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
