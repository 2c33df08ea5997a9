"""Which of a take's files are stored already, kept beside its segments.

A take cut into pieces is stored piece by piece (while recording, or by the upload step); a
retried upload, or the upload after live storing failed halfway, must not store a piece a
second time under a `-1` key. Written atomically: a crash leaves the old journal or the new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

JOURNAL_NAME = "stored.json"


class StoredJournal:
    def __init__(self, folder: Path) -> None:
        self._path = folder / JOURNAL_NAME

    def urls(self) -> dict[str, str]:
        """Stored files by their file name in the take's folder: their URL."""
        try:
            loaded = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):  # unreadable: storing again is the safe side
            return {}
        return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}

    def add(self, name: str, url: str) -> None:
        urls = self.urls()
        urls[name] = url
        partial = self._path.with_name(self._path.name + ".part")
        with open(partial, "w") as out:
            json.dump(urls, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self._path)
