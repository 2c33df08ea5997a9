"""Where finished recordings are kept. Small on purpose: one more backend (COS, S3) is one class."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Protocol


class StorageError(RuntimeError):
    """The file could not be stored; the local copy is untouched.

    `permanent` errors (refused credentials, a bucket that does not exist) will fail the
    same way on a second try, so they are not retried."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class Storage(Protocol):
    def check_writable(self) -> None:
        """Fail now, with a StorageError, if a finished file could not be stored later."""
        ...

    def store(self, source: Path, key: str) -> str:
        """Store `source` under `key` (never replacing an earlier object); return its URL."""
        ...

    def key_of(self, url: str) -> str:
        """The key of an object this storage stored, from its URL (a `-N` variant included)."""
        ...

    def open_live(self, key: str, spool: Path) -> LiveObject:
        """A file stored under `key` (or a free variant) while it is written; what waits to
        be sent is kept in `spool`."""
        ...


class LiveObject(Protocol):
    """A stored file being written (see recorder.live_finish): the muxer writes to `output`
    (a path, or a file object); `finish()` makes it whole and returns its URL; `abort()`
    leaves nothing behind."""

    @property
    def output(self) -> str | io.RawIOBase: ...

    def finish(self) -> str: ...

    def abort(self) -> None: ...
