"""Where finished recordings go, behind the small `Storage` interface."""

from __future__ import annotations

from recorder.settings import RecorderSettings
from recorder.storage.base import Storage, StorageError
from recorder.storage.local import LocalStorage


def open_storage(settings: RecorderSettings) -> Storage:
    """The configured storage: the local folder (COS comes with its own issue)."""
    return LocalStorage(settings.storage_dir)


__all__ = ["LocalStorage", "Storage", "StorageError", "open_storage"]
