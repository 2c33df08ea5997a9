from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from recorder.media.capture import capture
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's results and settings for this test session only, not the developer's ~/.prefect.
# Set before anything imports Prefect, which reads its settings once: so this module imports
# Prefect only inside its fixtures, and so do the helpers it imports.
_PREFECT_HOME = tempfile.mkdtemp(prefix="recorder-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)

if shutil.which("ffprobe") is None:
    raise pytest.UsageError("ffprobe is needed to check recordings independently: apt-get install ffmpeg")


RECORDED_SECONDS = 3.0


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Segment folders of three anchors recorded once from a real sim room:
    "av" (video+audio), "audio" (camera off) and "video" (muted), 3 s each."""
    root = tmp_path_factory.mktemp("recorded")
    script = SimScript(
        anchors=[
            SimAnchor(user_id="av", leave=RECORDED_SECONDS),
            SimAnchor(user_id="audio", leave=RECORDED_SECONDS, video=False),
            SimAnchor(user_id="video", leave=RECORDED_SECONDS, audio=False),
        ]
    )
    folders = {a.user_id: root / a.user_id for a in script.anchors}
    with SimRoom(1400000001, "fixture", script) as room:
        room.begin()
        threads = [
            threading.Thread(
                target=capture,
                args=(room.stream_url(name), folder),
                kwargs={"segment_seconds": 1.0, "read_timeout": 10.0},
            )
            for name, folder in folders.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    yield folders


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect API (SQLite) for every test that runs a real flow."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # No heartbeat thread: it only costs a second at the end of every run here. The server
    # start waits PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (scripts/test: 120 s), not 30.
    with (
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=None),
    ):
        yield


@dataclass
class Dirs:
    work: Path
    storage: Path


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Iterator[Dirs]:
    """Flow runs of one test: their own work and storage folders, a quick room poll."""
    found = Dirs(tmp_path / "work", tmp_path / "recordings")
    monkeypatch.delenv("CFS_PATH", raising=False)
    monkeypatch.setenv("RECORDER_WORK_DIR", str(found.work))
    monkeypatch.setenv("RECORDER_STORAGE_DIR", str(found.storage))
    monkeypatch.setenv("RECORDER_POLL_SECONDS", "0.2")
    # An anchor's file closes 1 s after their stream ends, not 15: most tests have anchors
    # leave for good. The tests of streams that come back set their own.
    monkeypatch.setenv("RECORDER_RECONNECT_SECONDS", "1")
    # Upload retries as in production, but waits of 0.1 s doubling (6 s in all), not 2 s (2 min).
    monkeypatch.setenv("RECORDER_UPLOAD_BACKOFF_SECONDS", "0.1")
    yield found


@pytest.fixture(scope="module")
def deployment_id(prefect_api: None) -> UUID:
    """The record-room deployment on the `recorders` pool, in the temporary Prefect API (no
    worker: its runs stay Scheduled), for the gateway to start runs of."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="recorders", type="process"), overwrite=True)
        flow_id = client.create_flow_from_name("record-room")
        return client.create_deployment(
            flow_id=flow_id,
            name="record-room",
            work_pool_name="recorders",
            entrypoint="flows/record_room.py:record_room",
        )


# The longest test files (minutes of real time each) go first: `scripts/test` hands out files
# in collection order, and one started last would run on alone after all the others.
LONGEST_FIRST = ("test_scale_out.py", "test_flow_segments.py", "test_service_integration.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within and among the other files is kept
