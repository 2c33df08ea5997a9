"""The embedded default storage: a folder on this machine; RecordFile is a file:// URL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from recorder.storage.base import StorageError


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _free_path(self, key: str) -> Path:
        """The key's path, or the first `name-N.ext` beside it that does not exist yet."""
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root):
            raise StorageError(f"key {key!r} leaves the storage folder")
        candidate, n = target, 1
        while candidate.exists():
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
            n += 1
        return candidate

    def store(self, source: Path, key: str) -> str:
        try:
            target = self._free_path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(source, partial)
            # Claim the final name only if nobody took it meanwhile (link fails if it exists).
            try:
                os.link(partial, target)
            except FileExistsError:
                partial.unlink()
                return self.store(source, key)
            partial.unlink()
        except OSError as exc:
            raise StorageError(f"{exc.strerror or exc} ({exc.filename or self.root})") from exc
        return target.as_uri()
