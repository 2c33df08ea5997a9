"""Every log line of a recording run says which room, and every line of an anchor's step
which anchor: also Prefect's own lines ("Finished in state …"), and the lines of code that
logs without knowing the run. Prefect already puts the flow and task run ids on them; with
`PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER=json` all of these are fields of each line.

Read from the run's context (the parameters of the task or flow being run), so no call site
has to remember to pass them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext

from recorder.recording import Recording
from recorder.request import RecordingRequest
from recorder.result import ResultDocument
from recorder.workspace import Take
from tasks.session import RoomSession

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
# What each run of this process logged under, by task or flow run id: Prefect logs a run's
# last line ("Finished in state …") after its context is gone.
_SEEN: dict[str, tuple[str | None, str | None]] = {}
# A process serving runs for weeks forgets the oldest (a run's lines come within its hours).
MAX_SEEN = 10_000


class RunFieldsFilter(logging.Filter):
    """Adds `room` and `anchor` to a record that has not got them, when the run knows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = str(getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None))
        told = (getattr(record, "room", None), getattr(record, "anchor", None))
        context = _run_fields()
        seen = _SEEN.get(run_id, (None, None))
        room = told[0] or context[0] or seen[0]
        anchor = told[1] or context[1] or seen[1]
        if (room, anchor) != seen:
            _SEEN[run_id] = (room, anchor)
            if len(_SEEN) > MAX_SEEN:
                del _SEEN[next(iter(_SEEN))]
        if room is not None and told[0] is None:
            record.room = room
        if anchor is not None and told[1] is None:
            record.anchor = anchor
        return True


def _run_fields() -> tuple[str | None, str | None]:
    task = TaskRunContext.get()
    if task is not None:
        return _fields_of(task.parameters)
    flow = FlowRunContext.get()
    if flow is not None:
        return _fields_of(flow.parameters)
    return None, None


def _fields_of(parameters: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    room: str | None = None
    anchor: str | None = None
    for value in (parameters or {}).values():
        if isinstance(value, RoomSession | RecordingRequest):
            room = value.room
        elif isinstance(value, ResultDocument):
            room = value.StrRoomId or value.RoomId
        take = value.take if isinstance(value, Recording) else value
        if isinstance(take, Take):
            anchor = take.anchor
    return room, anchor


def install_run_fields() -> None:
    """On the run loggers of this process, once."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RunFieldsFilter) for f in logger.filters):
            logger.addFilter(RunFieldsFilter())
