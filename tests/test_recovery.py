"""A recording whose process is killed outright (SIGKILL: no hook, no goodbye) is finished from
disk by `recover-recordings`: the file plays, holds all but the last moments, and the
callback is sent once. Also what tells a dead recording from a live one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.settings import PREFECT_API_URL

from flows.artifacts import FILES_TABLE_DESCRIPTION, SUMMARY_DESCRIPTION
from flows.recover import recover_recordings
from recorder.recovery import (
    DIED,
    RunOwner,
    mark_reported,
    owner_alive,
    read_run_record,
    this_process,
    unfinished_runs,
    write_run_record,
)
from recorder.request import parse_request
from recorder.result import ResultDocument
from tests.conftest import Dirs
from tests.http_receiver import Receiver
from tests.media_check import decode_to_end, ffprobe
from tests.prefect_service import REPO_ROOT

pytestmark = pytest.mark.timeout(180)

USER_SIG = "sig-RECOVERY-NEVER-STORE-5e5e"
REQUEST = {
    "SdkAppId": 1400000777,
    "RoomId": 777,
    "UserId": "recorder_777",
    "UserSig": USER_SIG,
    "CosConfig": {"Region": "ap-guangzhou", "Bucket": "class-1250000000", "Path": "/r"},
    "Mode": "02",
}


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(done.stdout)


def test_a_live_process_is_alive_a_finished_one_is_not_another_hosts_is_unknown(tmp_path: Path) -> None:
    me = this_process()
    assert owner_alive(me) is True
    assert owner_alive(me.model_copy(update={"pid": _dead_pid()})) is False
    # The same pid, reused by a newer process, is not the recorder that died.
    assert owner_alive(me.model_copy(update={"started": "1"})) is False
    assert owner_alive(me.model_copy(update={"boot_id": "another-boot"})) is False
    assert owner_alive(RunOwner(host="elsewhere", pid=1, started="1", boot_id="")) is None


def test_only_runs_whose_process_died_and_never_reported_are_unfinished(tmp_path: Path) -> None:
    request = parse_request(REQUEST)
    alive = write_run_record(tmp_path / "alive", "alive", request, None)
    dead = write_run_record(tmp_path / "dead", "dead", request, "sealed")
    (tmp_path / "dead" / "run.json").write_text(
        dead.model_copy(
            update={"owner": dead.owner.model_copy(update={"pid": _dead_pid()})}
        ).model_dump_json()
    )
    reported = write_run_record(tmp_path / "reported", "reported", request, None)
    (tmp_path / "reported" / "run.json").write_text(
        reported.model_copy(
            update={"owner": dead.owner.model_copy(update={"pid": _dead_pid()})}
        ).model_dump_json()
    )
    mark_reported(tmp_path / "reported", "delivered")
    (tmp_path / "not-a-run").mkdir()

    assert alive.owner.pid == os.getpid()
    assert [r.run_id for r in unfinished_runs(tmp_path)] == ["dead"]
    record = read_run_record(tmp_path / "dead")
    assert record is not None and record.sealed_secrets == "sealed"
    assert USER_SIG not in (tmp_path / "dead" / "run.json").read_text()  # the secret is not on disk


def test_a_recording_killed_outright_is_recovered_with_all_but_the_last_moments(
    dirs: Dirs, tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"anchors": [{"user_id": "teacher", "leave": 120}]}))
    with Receiver() as receiver:
        request_file = tmp_path / "request.json"
        request_file.write_text(json.dumps({**REQUEST, "Callback": receiver.url}))
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "RECORDER_WORK_DIR": str(dirs.work),
            "RECORDER_STORAGE_DIR": str(dirs.storage),
            "RECORDER_POLL_SECONDS": "0.2",
        }
        recording = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "record", str(request_file), "--sim-script", str(script)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            takes = _wait_for_segments(dirs.work, seconds=60)
            time.sleep(8)  # eight seconds of the class
        finally:
            killed_at = time.time()
            os.killpg(recording.pid, signal.SIGKILL)  # the whole process, no hook runs
            recording.wait(timeout=10)
        assert not receiver.received  # the dead recorder said nothing

        [run_dir] = [p for p in dirs.work.iterdir() if p.is_dir()]
        take = json.loads((takes / "take.json").read_text())
        started = _epoch(take["started_at"])

        assert recover_recordings() == [run_dir.name]
        assert recover_recordings() == []  # once: nothing is left to recover
        [posted] = receiver.received

    document = ResultDocument.model_validate(posted.json())
    [entry] = document.Files
    assert (entry.UserId, entry.Status) == ("teacher", 1), entry
    assert "the recording process died" in entry.Message
    path = Path(entry.RecordFile.removeprefix("file://"))
    probed = ffprobe(path)
    assert (probed.codec("video"), probed.codec("audio")) == ("h264", "aac")
    decode_to_end(path)
    lost = (killed_at - started) - probed.duration
    # What was on air from the take's start to the kill, less the file: the last moments,
    # plus the ~0.5 s from seeing the anchor to the stream's first packet.
    assert lost <= 2.5, f"lost {lost:.2f} s"
    print(f"recovered {probed.duration:.2f} s of {killed_at - started:.2f} s on air: lost {lost:.2f} s")
    assert not run_dir.exists()  # delivered: the work folder is gone

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_dir.name))
    # Crashed, a final state, and the result document on the run all the same.
    assert run.state is not None and run.state.is_crashed(), run.state
    assert "the recording process died" in (run.state.message or "")
    # The run's table of files says what was delivered, as a run that ended well does.
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    [table] = [a for a in artifacts if a.description == FILES_TABLE_DESCRIPTION]
    [row] = json.loads(str(table.data))
    assert (row["anchor"], row["status"], row["link"]) == ("teacher", 1, entry.RecordFile)
    assert row["size_bytes"] == path.stat().st_size
    assert row["seconds"] == pytest.approx(probed.duration, abs=0.3)
    assert any(a.description == SUMMARY_DESCRIPTION and DIED in str(a.data) for a in artifacts)


def _wait_for_segments(work: Path, seconds: float) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = sorted(work.glob("*/*/seg_*.ts"))
        if found and found[0].stat().st_size > 0:
            return found[0].parent
        time.sleep(0.2)
    raise AssertionError("the recording never started")


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def test_a_result_whose_callback_failed_is_sent_whole_by_recovery(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run stores its file, then its callback fails for good: the file leaves the work
    # folder, the run stays unreported. Recovery (the run's process gone) must send the
    # run's own result, the stored file in it, not a result of what is left on disk.
    from flows.record_room import run_request
    from recorder.rooms.sim import SimRoom
    from recorder.rooms.sim_script import SimAnchor, SimScript

    monkeypatch.setenv("RECORDER_CALLBACK_ATTEMPTS", "1")
    with Receiver(statuses=[500, 200]) as receiver:
        request = parse_request({**REQUEST, "Callback": receiver.url, "MaxIdleTime": 1})
        with SimRoom(
            request.SdkAppId, request.room, SimScript(anchors=[SimAnchor(user_id="teacher", leave=2.0)])
        ):
            document, state = run_request(request)
        assert not state.is_completed() and len(receiver.received) == 1
        [run_dir] = [p for p in dirs.work.iterdir() if p.is_dir()]
        record = read_run_record(run_dir)
        assert record is not None
        dead = record.owner.model_copy(update={"pid": _dead_pid()})
        (run_dir / "run.json").write_text(record.model_copy(update={"owner": dead}).model_dump_json())

        assert recover_recordings() == [run_dir.name]
        assert recover_recordings() == []
        sent = ResultDocument.model_validate(receiver.received[-1].json())

    assert len(receiver.received) == 2
    assert sent.Files == document.Files
    [entry] = sent.Files
    assert entry.Status == 1 and Path(entry.RecordFile.removeprefix("file://")).is_file()
    assert not run_dir.exists()
