"""Where finished recordings go, behind the small `Storage` interface.

The rule: the local folder (RECORDER_STORAGE_DIR) unless the service is configured with
RECORDER_STORAGE=cos; then the request's CosConfig (Bucket, Region, Path) says where, with
the request's keys or else the worker's TENCENTCLOUD_* environment.
"""

from __future__ import annotations

from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage.base import Storage, StorageError
from recorder.storage.local import LocalStorage

# How a Message names each storage: "write to COS failed: ...".
STORAGE_LABELS = {"local": "local storage", "cos": "COS"}


def open_storage(settings: RecorderSettings, location: CosLocation) -> Storage:
    """The configured storage; StorageError (permanent) if COS has no credentials."""
    if settings.storage == "cos":
        from recorder.storage.cos import CosStorage
        from recorder.storage.credentials import resolve_credentials

        return CosStorage(location, resolve_credentials(location), settings)
    return LocalStorage(settings.storage_dir)


__all__ = ["STORAGE_LABELS", "LocalStorage", "Storage", "StorageError", "open_storage"]
