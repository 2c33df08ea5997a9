"""What the steps of one run share: the room, the run's work folder, the settings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from recorder.request import RecordMode
from recorder.storage import StorageError


class RoomSession(BaseModel):
    """Made by `join`; holds no secret, since task results are persisted."""

    model_config = ConfigDict(frozen=True)

    backend: str
    sdk_app_id: int
    room: str
    run_dir: Path
    mode: RecordMode
    cos_path: str
    # How Messages name the storage ("COS", "local storage").
    storage_label: str
    joined_at: datetime


def worth_retrying(task: Task[..., object], run: TaskRun, state: State[object]) -> bool:
    """Prefect retry rule: a permanent storage failure (refused keys, no such bucket) fails
    the same way every time, so it is not retried."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, StorageError) and error.permanent)
