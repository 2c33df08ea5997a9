"""The work folder of one recording run: a journal that outlives the process.

`{work}/{run}/{anchor}_{start}/` holds one anchor's recording (a "take": the anchor from
when they started publishing until their stream ended), with `take.json` saying whose it
is. `closed.json` says the room is over for this run and why; `stop.json` asks the
recordings still running to end now (a stop request, a cancellation). A retried run reads this
journal instead of watching a room that has long ended, so it delivers the same takes.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

TAKE_FILE = "take.json"
CLOSED_FILE = "closed.json"
STOP_FILE = "stop.json"


class Take(BaseModel):
    model_config = ConfigDict(frozen=True)

    anchor: str
    started_at: datetime
    stream_url: str

    @property
    def name(self) -> str:
        stamp = self.started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{self.anchor}_{stamp}"


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".part")
    with open(partial, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())  # the journal must survive a power cut, not just a crash
    os.replace(partial, path)


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, take: Take) -> Path:
        # Anchors are TRTC UserIds, checked where they enter (request, room backends); should
        # one ever hold '/' or '..', its take must not be written (or discarded) outside the run.
        if Path(take.name).name != take.name or "\x00" in take.name:
            raise ValueError(f"anchor {take.anchor!r} cannot name a folder inside the run folder")
        return self.root / take.name

    def add(self, take: Take) -> Path:
        folder = self.folder(take)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / TAKE_FILE, take.model_dump_json())
        return folder

    def takes(self) -> list[Take]:
        found = [Take.model_validate_json(p.read_text()) for p in self.root.glob(f"*/{TAKE_FILE}")]
        return sorted(found, key=lambda t: (t.started_at, t.anchor))

    def close(self, reason: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.root / CLOSED_FILE, json.dumps({"reason": reason}))

    def closed_reason(self) -> str | None:
        path = self.root / CLOSED_FILE
        return json.loads(path.read_text())["reason"] if path.exists() else None

    def request_stop(self, reason: str) -> None:
        """Ask every recording of this run to end now (they look for this file)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.root / STOP_FILE, json.dumps({"reason": reason}))

    def stop_reason(self) -> str | None:
        path = self.root / STOP_FILE
        return json.loads(path.read_text())["reason"] if path.exists() else None

    def discard(self, take: Take) -> None:
        """Remove a take's media: only once its final file is safely stored."""
        shutil.rmtree(self.folder(take), ignore_errors=True)

    def discard_if_done(self) -> bool:
        """Remove the run folder when no take is left in it."""
        if self.takes():
            return False
        shutil.rmtree(self.root, ignore_errors=True)
        return True
