"""What the steps of one run share: the room, the run's work folder, the settings."""

from __future__ import annotations

from datetime import datetime, timedelta
from logging import Logger, LoggerAdapter
from pathlib import Path

from prefect import Task, get_run_logger
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from recorder.media.pieces import piece_name
from recorder.media.transcode import EXTENSIONS
from recorder.request import RecordMode
from recorder.storage import StorageError
from recorder.storage.keys import recording_key
from recorder.workspace import Take, Workspace


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
    # Each take is cut into files of at most this long (None: one file per take).
    max_file_seconds: float | None = None


def converted_file(folder: Path, take: Take, mode: RecordMode, index: int = 0) -> Path:
    """Where a take's MP3/MP4 (or its `index`th piece) is made: beside its segments."""
    return folder / piece_name(f"{take.name}.{EXTENSIONS[mode]}", index)


def run_logger(session: RoomSession, take: Take | None = None) -> Logger | LoggerAdapter[Logger]:
    """The run's logger, with the room and the anchor on every record (structured logs:
    Prefect's JSON formatter writes them as fields, beside the flow and task run ids)."""
    if take is None:
        return get_run_logger(room=session.room, sdk_app_id=str(session.sdk_app_id))
    return get_run_logger(room=session.room, sdk_app_id=str(session.sdk_app_id), anchor=take.anchor)


def take_folder(session: RoomSession, take: Take) -> Path:
    """Where a take's segments, files and journal are."""
    return Workspace(session.run_dir).folder(take)


def stored_key(session: RoomSession, take: Take, extension: str, start_seconds: float = 0.0) -> str:
    """The key a take's file is stored under (before any `-N` for a key already taken); a
    piece of a cut take is named for the moment it starts, as the take is for its own."""
    started = take.started_at + timedelta(seconds=start_seconds)
    return recording_key(session.cos_path, session.room, take.anchor, started, extension)


def worth_retrying(task: Task[..., object], run: TaskRun, state: State[object]) -> bool:
    """Prefect retry rule: a permanent storage failure (refused keys, no such bucket) fails
    the same way every time, so it is not retried."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, StorageError) and error.permanent)
