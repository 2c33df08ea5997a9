from __future__ import annotations

from prefect import task

from recorder.settings import RecorderSettings
from recorder.workspace import Take, Workspace
from tasks.session import RoomSession, run_logger


@task(name="cleanup")
def cleanup(session: RoomSession, stored: list[Take], delivered: bool) -> int:
    """Remove the media of the takes whose final file is stored; keep everything else.

    The run's journal stays until the result is `delivered`, so a retried run still knows
    the room is over and which takes it had."""
    workspace = Workspace(session.run_dir)
    if RecorderSettings().keep_local_copy:
        run_logger(session).info("kept the local copies in %s (keep_local_copy is set)", session.run_dir)
        return len(workspace.takes())
    for take in stored:
        workspace.discard(take)
    kept = len(workspace.takes())
    if delivered and workspace.discard_if_done():
        run_logger(session).info("work folder %s removed: every file is stored", session.run_dir)
    else:
        run_logger(session).warning("kept %d recording(s) in %s: not stored yet", kept, session.run_dir)
    return kept
