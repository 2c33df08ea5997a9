"""The run's artifacts in the Prefect UI: its progress while recording, then a table of the
files and a summary. Their content is made in recorder/run_summary.py (no secrets there)."""

from __future__ import annotations

import json
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import ArtifactCreate

from recorder.run_summary import FileRow, TakeProgress, Throttle, progress_markdown

FILES_TABLE_DESCRIPTION = "Recorded files"
SUMMARY_DESCRIPTION = "Run summary"
PROGRESS_EVERY_SECONDS = 5.0


class RunProgress:
    """The run's progress artifact: elapsed time and bytes per anchor, updated every few
    seconds while recording. The bar shows the share of a scheduled recording's time that
    has passed (`max_seconds`), or 0 until the room ends; 100 once the files are delivered.
    An artifact is for people: when the API is away, it is skipped, never the recording."""

    def __init__(self, room: str, max_seconds: int | None) -> None:
        self._room = room
        self._max_seconds = max_seconds
        self._due = Throttle(PROGRESS_EVERY_SECONDS)
        self._id: UUID | None = None
        try:
            created = create_progress_artifact(
                progress=0.0, description=progress_markdown(room, 0.0, [], "waiting for anchors")
            )
            # Called from a sync flow it is the id (from async code it would be a coroutine).
            self._id = created if isinstance(created, UUID) else None
        except Exception as exc:
            get_run_logger().warning("no progress artifact: %s", exc)

    def update(
        self, elapsed: float, takes: list[TakeProgress], *, phase: str = "recording", now: bool = False
    ) -> None:
        """Every few seconds at most; `now`: at once (a new phase)."""
        if not self._due() and not now:
            return
        share = min(99.0, 100.0 * elapsed / self._max_seconds) if self._max_seconds else 0.0
        self._send(share, progress_markdown(self._room, elapsed, takes, phase))

    def done(self, elapsed: float, takes: list[TakeProgress]) -> None:
        self._send(100.0, progress_markdown(self._room, elapsed, takes, "files delivered"))

    def _send(self, share: float, text: str) -> None:
        if self._id is None:
            return
        try:
            update_progress_artifact(self._id, progress=share, description=text)
        except Exception as exc:  # a blip of the API: the next update tries again
            get_run_logger().warning("could not update the progress artifact: %s", exc)


def publish_files(rows: list[FileRow], summary: str) -> None:
    """The table of files (one row each) and the run's summary, as artifacts of the run."""
    create_table_artifact(table=[r.model_dump() for r in rows], description=FILES_TABLE_DESCRIPTION)
    create_markdown_artifact(markdown=summary, description=SUMMARY_DESCRIPTION)


def publish_files_on(client: SyncPrefectClient, run_id: UUID, rows: list[FileRow], summary: str) -> None:
    """The same, on a run that is over (delivered by a hook or by recovery, outside it)."""
    table = json.dumps([r.model_dump() for r in rows])  # as create_table_artifact stores it
    client.create_artifact(
        ArtifactCreate(type="table", data=table, description=FILES_TABLE_DESCRIPTION, flow_run_id=run_id)
    )
    client.create_artifact(
        ArtifactCreate(type="markdown", data=summary, description=SUMMARY_DESCRIPTION, flow_run_id=run_id)
    )
