"""Finding recordings whose process died, so they can be finished from disk.

Every run writes `run.json` into its work folder when it joins the room: which process
records it (host, pid and that process's start time, so a reused pid is not mistaken for
it) and the request without its secrets (plus the secrets sealed with the service key,
when the run has them). A folder whose recording process is gone and whose result was
never delivered is an unfinished recording: its segments are whole up to the moment the
process died, and `recorder recover` turns them into files.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel

from recorder.request import RecordingRequest
from recorder.result import ResultDocument
from recorder.sealing import public_parameters
from recorder.workspace import write_atomically

RUN_FILE = "run.json"
DIED = "the recording process died"
REPORTED_FILE = "reported.json"
RESULT_FILE = "result.json"


class RunOwner(BaseModel):
    host: str
    pid: int
    started: str  # the process's start time in clock ticks since boot (/proc/PID/stat field 22)
    boot_id: str


class RunRecord(BaseModel):
    """run.json: who records this run, and what it was asked to record (no secrets)."""

    run_id: str
    owner: RunOwner
    request: dict[str, object]
    sealed_secrets: str | None = None

    def recording_request(self) -> RecordingRequest:
        return RecordingRequest.model_validate(self.request)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return stat.rpartition(")")[2].split()[19]


def this_process() -> RunOwner:
    pid = os.getpid()
    return RunOwner(host=socket.gethostname(), pid=pid, started=_start_ticks(pid), boot_id=_boot_id())


def write_run_record(
    run_dir: Path, run_id: str, request: RecordingRequest, sealed_secrets: str | None
) -> RunRecord:
    record = RunRecord(
        run_id=run_id, owner=this_process(), request=public_parameters(request), sealed_secrets=sealed_secrets
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / RUN_FILE, record.model_dump_json())
    return record


def read_run_record(run_dir: Path) -> RunRecord | None:
    try:
        text = (run_dir / RUN_FILE).read_text()
    except (FileNotFoundError, NotADirectoryError):  # not a run, or one removed as we looked
        return None
    return RunRecord.model_validate_json(text)


def owner_alive(owner: RunOwner) -> bool | None:
    """Is the recording process still running? None when this host cannot tell (another
    host's process: its own `recorder recover` finds it)."""
    if owner.host != socket.gethostname():
        return None
    if owner.boot_id and owner.boot_id != _boot_id():
        return False  # the machine restarted since
    if not owner.started:
        return None
    return _start_ticks(owner.pid) == owner.started


def mark_reported(run_dir: Path, why: str) -> None:
    """The run's result document is out (published, and POSTed to its Callback if it has
    one): the run is no longer unfinished, whatever a later retry of it does."""
    if run_dir.is_dir():
        write_atomically(run_dir / REPORTED_FILE, json.dumps({"why": why}))


def reported(run_dir: Path) -> bool:
    return (run_dir / REPORTED_FILE).is_file()


def forget_report(run_dir: Path) -> None:
    """A new attempt of the run starts: it reports anew."""
    (run_dir / REPORTED_FILE).unlink(missing_ok=True)
    (run_dir / RESULT_FILE).unlink(missing_ok=True)


def save_result(run_dir: Path, document: ResultDocument) -> None:
    """The result a run could not deliver (its callback failed for good). The files it lists
    as stored are gone from the work folder, so recovery sends this, not a result made
    from what is left on disk."""
    if run_dir.is_dir():
        write_atomically(run_dir / RESULT_FILE, document.model_dump_json())


def saved_result(run_dir: Path) -> ResultDocument | None:
    try:
        return ResultDocument.model_validate_json((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def unfinished_runs(work_root: Path, lost: Collection[str] = ()) -> list[RunRecord]:
    """Runs under `work_root` whose recording process is gone, oldest first: on this host,
    as its pid says; on another (a work folder shared across machines), when its run id is
    in `lost` (Prefect saw its heartbeats stop)."""
    found: list[tuple[float, RunRecord]] = []
    if not work_root.is_dir():
        return []
    for run_dir in work_root.iterdir():
        try:
            record = read_run_record(run_dir)
        except (OSError, ValueError):
            continue  # half-written by a process that died while writing it: no takes either
        if record is None or reported(run_dir):
            continue
        alive = owner_alive(record.owner)
        if alive is True or (alive is None and record.run_id not in lost):
            continue
        found.append((run_dir.stat().st_mtime, record))
    return [record for _, record in sorted(found, key=lambda pair: pair[0])]


__all__ = [
    "DIED",
    "RUN_FILE",
    "RunOwner",
    "RunRecord",
    "forget_report",
    "mark_reported",
    "owner_alive",
    "read_run_record",
    "reported",
    "save_result",
    "saved_result",
    "this_process",
    "unfinished_runs",
    "write_run_record",
]
