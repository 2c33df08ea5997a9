"""The `recorder` command as a user runs it: a separate process, files checked independently."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media_check import decode_to_end, ffprobe

SECRET = "sig-CLI-SECRET-77"


def _recorder(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PREFECT_HOME": str(cwd / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("CFS_PATH", None)
    for name in [n for n in env if n.startswith("RECORDER_")]:
        env.pop(name)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_records_two_playable_files(tmp_path: Path) -> None:
    result = _recorder(["demo"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Recorded 2 of 2 file(s)" in result.stdout
    document = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert [f["UserId"] for f in document["Files"]] == ["teacher", "student_1"]
    published = {"teacher": 15.0, "student_1": 8.0}  # the demo script; the student leaves early
    for entry in document["Files"]:
        assert entry["Status"] == 1, entry["Message"]
        path = Path(entry["RecordFile"].removeprefix("file://"))
        assert path.is_relative_to(tmp_path / "recordings" / "demo" / "1234")
        assert str(path) in result.stdout  # the summary says where each file is
        probe = ffprobe(path)
        assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
        assert probe.duration == pytest.approx(published[entry["UserId"]], abs=0.5)
        for seconds in decode_to_end(path).values():
            assert seconds == pytest.approx(published[entry["UserId"]], abs=0.5)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_record_runs_a_request_file_with_a_room_script(tmp_path: Path) -> None:
    request = {
        "SdkAppId": 1400000000,
        "StrRoomId": "support-desk",
        "UserId": "qa_recorder",
        "UserSig": SECRET,
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "calls-1250000000", "Path": "/calls"},
        "MaxIdleTime": 1,
    }
    script = {"anchors": [{"user_id": "agent_7", "leave": 2.5}, {"user_id": "caller", "leave": 2.0}]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "room.json").write_text(json.dumps(script))
    result = _recorder(["record", "request.json", "--sim-script", "room.json"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mp3s = sorted((tmp_path / "recordings" / "calls" / "support-desk").glob("*.mp3"))
    assert [p.name.split("_2")[0] for p in mp3s] == ["agent_7", "caller"]
    for path in mp3s:
        assert ffprobe(path).codec("audio") == "mp3"
    assert SECRET not in result.stdout + result.stderr


def test_a_bad_request_is_refused_naming_each_field(tmp_path: Path) -> None:
    bad = {"SdkAppId": 1, "RoomId": 0, "UserId": "x y", "UserSig": SECRET, "CosConfig": {}, "Mode": "9"}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = _recorder(["record", "bad.json"], tmp_path, timeout=60)
    assert result.returncode == 2
    for field in ("RoomId:", "UserId:", "CosConfig.Region:", "CosConfig.Bucket:", "Mode:"):
        assert re.search(rf"^\s+{re.escape(field)}", result.stderr, re.M), field
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "recordings").exists()


def test_help_lists_the_commands_with_examples(tmp_path: Path) -> None:
    result = _recorder(["--help"], tmp_path, timeout=60)
    assert result.returncode == 0
    for text in ("demo", "record", "examples:", "recorder record request.json"):
        assert text in result.stdout
