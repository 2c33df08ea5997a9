"""What the steps of one run share: the room, the run's work folder, the settings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from recorder.request import RecordMode


class RoomSession(BaseModel):
    """Made by `join`; holds no secret, since task results are persisted."""

    model_config = ConfigDict(frozen=True)

    backend: str
    sdk_app_id: int
    room: str
    run_dir: Path
    mode: RecordMode
    cos_path: str
    joined_at: datetime
