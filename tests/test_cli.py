"""The `recorder` command as a user runs it: a separate process, files checked independently."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import build_parser, main
from flows.cli_view import find_run_folder
from recorder.recovery import RUN_FILE, write_run_record
from recorder.request import parse_request
from tests.media_check import decode_to_end, ffprobe

SECRET = "sig-CLI-SECRET-77"


COMMANDS = ["demo", "record", "sim-room", "serve", "service-key", "seal", "usersig", "recover"]
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(cwd: Path) -> dict[str, str]:
    env = os.environ | {"PREFECT_HOME": str(cwd / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("CFS_PATH", None)
    for name in [n for n in env if n.startswith("RECORDER_")]:
        env.pop(name)
    # Work and storage folders in the test's own folder, whatever the working directory.
    env |= {"RECORDER_WORK_DIR": str(cwd / "work"), "RECORDER_STORAGE_DIR": str(cwd / "recordings")}
    return env | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "DO_NOT_TRACK": "1"}


def _recorder(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _recorder_on_a_terminal(args: list[str], cwd: Path, timeout: float = 240) -> tuple[int, str, str]:
    """Run `recorder` with stderr on a pseudo-terminal, as a user at a terminal sees it: the
    exit code, stdout, and everything the terminal got (escape sequences included)."""
    controller, terminal = pty.openpty()
    with open(cwd / "stdout.txt", "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args],
            cwd=cwd,
            env=_env(cwd) | {"COLUMNS": "100"},
            stdout=stdout,
            stderr=terminal,
        )
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the child closed the terminal: it has exited
                    break
                if not chunk:
                    break
                received += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(controller)
    return code, (cwd / "stdout.txt").read_text(), received.decode(errors="replace")


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The files table's rows by anchor: status, duration, size, file."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) == 5 and cells[1] in ("ok", "FAILED"):
            rows[cells[0]] = cells[1:]
    return rows


def test_demo_records_two_playable_files(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _recorder(["demo"], tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Recorded 2 of 2 file(s)" in result.stdout
    rows = _table_rows(result.stdout)
    assert list(rows) == ["teacher", "student_1"], result.stdout
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
        # The table: where the file is, its size and duration, as the file itself says.
        status, duration, size, where = rows[entry["UserId"]]
        assert (status, Path(where)) == ("ok", path)
        assert float(size.removesuffix(" MB")) * 1e6 == pytest.approx(path.stat().st_size, abs=5_000)
        assert float(duration.removesuffix(" s")) == pytest.approx(probe.duration, abs=0.3)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
    _check_plain_progress(result.stderr, elapsed, published)


def _check_plain_progress(stderr: str, elapsed: float, published: dict[str, float]) -> None:
    """Off a terminal: no animation, Prefect's info lines kept off the console, and at most
    one progress line every 10 s, each saying what is on disk so far."""
    assert "\r" not in stderr and "\x1b" not in stderr
    assert "| INFO" not in stderr
    progress = [line for line in stderr.splitlines() if line.startswith("room 1234: ")]
    assert 1 <= len(progress) <= elapsed / 10 + 1, stderr
    assert len(stderr.splitlines()) <= len(progress) + 3, stderr  # nothing else to speak of
    reported: dict[str, list[tuple[float, float]]] = {}
    for line in progress:
        for anchor, seconds, size in re.findall(r"(\w+) (\d+\.\d) s (\d+\.\d\d) MB", line):
            reported.setdefault(anchor, []).append((float(seconds), float(size)))
    # The recording lasts longer than 10 s: some line caught it (takes stay listed once seen).
    assert "teacher" in reported, stderr
    for anchor, looks in reported.items():
        assert looks == sorted(looks), stderr  # on disk, recordings only grow
        assert all(0 <= seconds <= published[anchor] + 0.5 for seconds, _ in looks), stderr


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
    code, stdout, terminal = _recorder_on_a_terminal(
        ["record", "request.json", "--sim-script", "room.json"], tmp_path
    )
    assert code == 0, stdout[-3000:] + terminal[-3000:]
    mp3s = sorted((tmp_path / "recordings" / "calls" / "support-desk").glob("*.mp3"))
    assert [p.name.split("_2")[0] for p in mp3s] == ["agent_7", "caller"]
    for path in mp3s:
        assert ffprobe(path).codec("audio") == "mp3"
        assert str(path) in stdout
    assert SECRET not in stdout + terminal
    # On a terminal the progress is a live display, redrawn in place (escape sequences),
    # with each anchor's row; Prefect's info lines do not tear it up.
    assert "\x1b[" in terminal
    shown = ESCAPE.sub("", terminal)
    assert "room support-desk: recording" in shown
    assert re.search(r"agent_7 +\d+\.\d s +\d+\.\d\d MB", shown), shown[-3000:]
    assert "| INFO" not in shown


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
    usage, examples = result.stdout.split("\nexamples:\n")
    parser_commands = [a for a in build_parser()._subparsers._group_actions[0].choices]  # type: ignore[union-attr]
    assert sorted(parser_commands) == sorted(COMMANDS)
    for command in COMMANDS:
        assert re.search(rf"^    {re.escape(command)}\s", usage, re.M), command  # with its one-line help
        assert re.search(rf"^  recorder {re.escape(command)}\b", examples, re.M), command
    assert "--debug" in usage and "--verbose" in usage


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_own_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert re.search(rf"\nexample:\n  recorder {re.escape(command)}\b", shown), shown


def test_an_error_is_one_line_and_its_traceback_only_with_debug(tmp_path: Path) -> None:
    result = _recorder(["record", "missing.json"], tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "recorder: error: cannot read missing.json: No such file or directory"
    ], result.stderr
    debugged = _recorder(["--debug", "record", "missing.json"], tmp_path, timeout=60)
    assert debugged.returncode == 2
    assert "Traceback (most recent call last)" in debugged.stderr
    assert "FileNotFoundError" in debugged.stderr
    assert debugged.stderr.splitlines()[-1] == result.stderr.strip()


def test_a_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = _recorder(["sim-room", "--port", str(server.getsockname()[1])], tmp_path, timeout=60)
    assert taken.returncode == 1
    assert len(taken.stderr.splitlines()) == 1
    assert taken.stderr.startswith("recorder: error: cannot serve on 127.0.0.1:")


def test_the_run_folder_is_the_one_this_process_records(tmp_path: Path) -> None:
    request = parse_request(
        {
            "SdkAppId": 1400000000,
            "RoomId": 1,
            "UserId": "rec",
            "UserSig": SECRET,
            "CosConfig": {"Region": "ap-guangzhou", "Bucket": "b-1250000000"},
        }
    )
    since = time.time()
    assert find_run_folder(tmp_path / "none-yet", since) is None
    mine = tmp_path / "run-mine"
    write_run_record(mine, "run-mine", request, None)
    # Another process's run, started later in the same work folder.
    theirs = tmp_path / "run-theirs"
    record = write_run_record(theirs, "run-theirs", request, None)
    other = record.owner.model_copy(update={"pid": record.owner.pid + 1})
    (theirs / RUN_FILE).write_text(record.model_copy(update={"owner": other}).model_dump_json())
    assert find_run_folder(tmp_path, since) == mine
    # A folder this process wrote long before the command started is an earlier run's.
    assert find_run_folder(tmp_path, since + 60) is None
    shutil.rmtree(mine)
    assert find_run_folder(tmp_path, since) is None
