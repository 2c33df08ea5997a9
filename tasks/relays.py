from __future__ import annotations

from prefect import task

from recorder.rooms.trtc import RELAYS_FILE, stop_relays
from recorder.settings import RecorderSettings
from tasks.session import RoomSession, run_logger


@task(name="stop-relays", retries=3, retry_delay_seconds=[2, 5, 15])
def release_relays(session: RoomSession) -> int:
    """StopPublishCdnStream for every TRTC relay the run started and did not stop yet.

    Runs when the room is over for the run, whether it went well or not: a relay nobody
    stops keeps a robot in the room (and costs money) until its MaxIdleTime runs out."""
    journal = session.run_dir / RELAYS_FILE
    if not journal.exists():
        return 0
    problems = stop_relays(RecorderSettings(), session.sdk_app_id, journal)
    if problems:
        # Raised, so Prefect retries; the journal keeps what is still running.
        raise RuntimeError("; ".join(problems))
    run_logger(session).info("every TRTC relay of the run is stopped")
    return 0
