"""Stopping a running flow run on request: the stop tag ends the recording, files are delivered."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse
from uuid import UUID

import pytest
from prefect import get_client, tags
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

from flows.record_room import STOPPED_ON_REQUEST, record_room
from flows.runs import STOP_TAG, RecordingStatus, read_recording, request_stop
from recorder.media.capture import SEGMENT_GLOB
from recorder.request import parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from tests.conftest import Dirs
from tests.http_receiver import Receiver
from tests.media_check import decode_to_end, ffprobe

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
PUBLISH_SECONDS = 60.0
# Two anchors publishing far longer than the test may take: only the stop can end the run.
SCRIPT = SimScript(
    anchors=[
        SimAnchor(user_id="host", leave=PUBLISH_SECONDS, tone_hz=440),
        SimAnchor(user_id="guest", join=0.2, leave=PUBLISH_SECONDS, tone_hz=660),
    ]
)


def _wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    """Poll `check` until it gives something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(every)


def _running_run(tag: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
    running = [r for r in runs if r.state is not None and r.state.is_running()]
    return running[0] if running else None


def _task_run_names(run_id: UUID) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {r.name for r in runs}


async def _request_stop(run_id: UUID) -> str:
    async with get_client() as client:
        return await request_stop(client, run_id)


async def _read_recording(run_id: UUID) -> RecordingStatus:
    async with get_client() as client:
        return await read_recording(client, run_id)


def _path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


def test_a_stop_request_ends_the_recording_and_delivers_the_files(dirs: Dirs) -> None:
    # A tag of this test's own: its flow run is found among every other test's.
    mark = f"stop-test-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, Any] = {}

    with Receiver() as receiver:
        request = parse_request(
            {
                "SdkAppId": 1400000000,
                "RoomId": 60606,
                "UserId": "recorder_1",
                "UserSig": "sig-stop-test",
                "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789", "Path": "/trtc"},
                "Callback": receiver.url,
                "Mode": "02",
                "MaxIdleTime": 300,
            }
        )

        def run() -> None:
            try:
                with tags(mark):
                    outcome["state"] = record_room(request, return_state=True)
            except BaseException as exc:  # reported by the test, not lost in the thread
                outcome["error"] = exc

        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(run,), name="record-room", daemon=True)
        try:
            with SimRoom(request.SdkAppId, request.room, SCRIPT):
                thread.start()
                flow_run = _wait_for("the flow run to be Running", lambda: _running_run(mark), 30)
                run_dir = dirs.work / str(flow_run.id)
                _wait_for(
                    "both record task runs",
                    lambda: {"record-host", "record-guest"} <= _task_run_names(flow_run.id),
                    20,
                )
                # The segment muxer opens each anchor's first segment as its first packet arrives.
                _wait_for(
                    "both anchors' first segment",
                    lambda: len({p.parent for p in run_dir.glob(f"*/{SEGMENT_GLOB}")}) >= 2,
                    20,
                )
                time.sleep(2.0)  # about two seconds of media recorded
                assert thread.is_alive() and not outcome, outcome

                state_name = asyncio.run(_request_stop(flow_run.id))
                stopped_at = time.monotonic()
                assert state_name == "Running"
                thread.join(timeout=20)
                took = time.monotonic() - stopped_at
                assert not thread.is_alive(), "the run did not end within 20 s of the stop request"
        finally:
            # On a failure above, leaving the room ended its streams and so the run: let it finish
            # (it posts its callback) before the receiver goes.
            if thread.ident is not None:
                thread.join(timeout=30)

    assert "error" not in outcome, outcome.get("error")
    state: State[Any] = outcome["state"]
    assert state.is_completed(), state.message
    document = state.result()
    assert isinstance(document, ResultDocument)
    # Far sooner than the room's script would have ended anything.
    assert took < 20

    assert sorted(f.UserId for f in document.Files) == ["guest", "host"]
    for entry in document.Files:
        assert entry.Status == 1, entry.Message
        assert entry.Message.startswith("ok: ") and STOPPED_ON_REQUEST in entry.Message, entry.Message
        path = _path(entry.RecordFile)
        assert path.parent == (dirs.storage / "trtc" / "60606").resolve()
        probe = ffprobe(path)
        assert {kind: str(s["codec_name"]) for kind, s in probe.streams.items()} == {
            "video": "h264",
            "audio": "aac",
        }
        assert 1.0 < probe.duration < 15.0, probe.duration
        reached = decode_to_end(path)
        assert set(reached) == {"video", "audio"}
        for seconds in reached.values():
            assert seconds == pytest.approx(probe.duration, abs=0.5)

    # The callback got the same document, once.
    assert [r.json() for r in receiver.received] == [document.model_dump(mode="json")]
    # The run carries its stop tag and publishes its result document for the gateway.
    with get_client(sync_client=True) as client:
        assert STOP_TAG in client.read_flow_run(flow_run.id).tags
    status = asyncio.run(_read_recording(flow_run.id))
    assert (status.run_id, status.state, status.final) == (flow_run.id, "Completed", True)
    assert status.result == document
    # Everything is stored and delivered: the run's work folder is gone.
    assert not run_dir.exists()
