"""Where finished recordings are kept. Small on purpose: one more backend (COS, S3) is one class."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class StorageError(RuntimeError):
    """The file could not be stored; the local copy is untouched."""


class Storage(Protocol):
    def store(self, source: Path, key: str) -> str:
        """Store `source` under `key` (never replacing an earlier object); return its URL."""
        ...
