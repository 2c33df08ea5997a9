"""The embedded default storage: a folder on this machine; RecordFile is a file:// URL."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from recorder.storage.base import StorageError


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise StorageError(f"{exc.strerror or exc} ({exc.filename or self.root})") from exc

    def _target(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if target == self.root or not target.is_relative_to(self.root):
            raise StorageError(f"key {key!r} does not name a file inside the storage folder")
        return target

    def store(self, source: Path, key: str) -> str:
        target = self._target(key)
        partial: Path | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A private temporary name: concurrent stores never write into each other.
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            os.close(fd)
            partial = Path(name)
            shutil.copyfile(source, partial)
            stored = _link_to_free_name(partial, target)
        except OSError as exc:
            raise StorageError(f"{exc.strerror or exc} ({exc.filename or self.root})") from exc
        finally:
            if partial is not None:
                partial.unlink(missing_ok=True)
        return stored.as_uri()

    def key_of(self, url: str) -> str:
        path = Path(unquote(urlparse(url).path))
        if not path.is_relative_to(self.root):
            raise StorageError(f"{url} is not in the storage folder {self.root}")
        return path.relative_to(self.root).as_posix()

    def open_live(self, key: str, spool: Path) -> LocalLiveFile:
        """A file written straight into the storage folder under a private temporary name,
        given the key's name (or a free variant) when finished; nothing waits in `spool`."""
        target = self._target(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            os.close(fd)
        except OSError as exc:
            raise StorageError(f"{exc.strerror or exc} ({exc.filename or self.root})") from exc
        return LocalLiveFile(Path(name), target)


class LocalLiveFile:
    def __init__(self, partial: Path, target: Path) -> None:
        self._partial = partial
        self._target = target

    @property
    def output(self) -> str:
        return str(self._partial)

    def finish(self) -> str:
        try:
            return _link_to_free_name(self._partial, self._target).as_uri()
        finally:
            self._partial.unlink(missing_ok=True)

    def abort(self) -> None:
        self._partial.unlink(missing_ok=True)


def _link_to_free_name(partial: Path, target: Path) -> Path:
    """Give the finished file the key's name, or `name-N.ext` if that is taken: a
    hard link fails rather than replace an existing file, so nothing is overwritten."""
    candidate, n = target, 1
    while True:
        try:
            os.link(partial, candidate)
            return candidate
        except FileExistsError:
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
            n += 1
