"""Service configuration: environment variables with the RECORDER_ prefix (and CFS_PATH)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RecorderSettings(BaseSettings):
    """Every setting has a default that works on a laptop with no account."""

    model_config = SettingsConfigDict(env_prefix="RECORDER_", frozen=True)

    # Media in progress. CFS_PATH wins, as in the original (a mounted file system for
    # long recordings); see `work_root`.
    work_dir: Path = Path("work")
    # Where the local storage backend keeps finished files.
    storage_dir: Path = Path("recordings")
    room_backend: Literal["sim"] = "sim"
    # Recording pieces: one MPEG-TS segment about every this many seconds.
    segment_seconds: float = Field(default=6.0, gt=0)
    # A stream that delivers nothing for this long has ended (a relay's end looks like this).
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    # How often the room is asked who is publishing.
    poll_seconds: float = Field(default=0.5, gt=0)
    callback_attempts: int = Field(default=4, ge=1)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    callback_backoff_seconds: float = Field(default=1.0, ge=0)

    @property
    def work_root(self) -> Path:
        cfs = os.environ.get("CFS_PATH")
        return Path(cfs) if cfs else self.work_dir
