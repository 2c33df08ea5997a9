"""The `recorder` command: run the pipeline here, on the simulated room or a request file."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pydantic import ValidationError

from flows.cli_view import (
    ProgressDisplay,
    RunWatch,
    error_line,
    files_table,
    route_prefect_console,
    stderr_console,
    stdout_console,
)
from flows.service_commands import add_commands
from recorder.request import MODE_NAMES, RecordingRequest, RequestError, parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimScript, demo_script
from recorder.settings import RecorderSettings
from recorder.workspace import Workspace

# Every command's examples: `recorder --help` lists them all, `recorder COMMAND --help` its own.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "demo": [
        ("recorder demo", "two simulated anchors, ~15 s, MP4 audio+video"),
        ("recorder demo --mode 00", "the same as MP3 audio files"),
    ],
    "record": [
        ("recorder record request.json", "one request (the original's JSON) through the flow"),
        ("recorder record request.json --sim-script room.json", "... against a scripted room"),
    ],
    "sim-room": [
        ("recorder sim-room --port 8765", "serve the demo room for a worker (RECORDER_SIM_ROOM_URL)")
    ],
    "serve": [("recorder serve --port 8080", "the HTTP gateway in front of the record-room deployment")],
    "service-key": [("recorder service-key", "a new RECORDER_SERVICE_KEY for the gateway and workers")],
    "seal": [("recorder seal request.json > params.json", "a request as a deployment's parameters")],
    "usersig": [("recorder usersig --sdkappid 1400000000 --userid rec_1", "a UserSig (key from the env)")],
    "recover": [("recorder recover", "finish this machine's recordings whose process died")],
    "--debug": [("recorder --debug record request.json", "show the traceback of an error")],
}
# Input the command cannot use (a missing or malformed file): as argparse's own errors.
BAD_INPUT = 2
INTERRUPTED = 130
INTERRUPTED_BY_USER = "interrupted (Ctrl-C)"
EXAMPLE_WIDTH = 40


class CommandError(Exception):
    """What went wrong, for the user: one line on stderr, and the exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _examples(names: list[str], heading: str) -> str:
    lines = [f"{heading}:"]
    for command, what in (example for name in names for example in EXAMPLES[name]):
        lines.append(
            f"  {command:<{EXAMPLE_WIDTH}}  {what}" if len(command) <= EXAMPLE_WIDTH else f"  {command}"
        )
        if len(command) > EXAMPLE_WIDTH:
            lines.append(f"  {'':<{EXAMPLE_WIDTH}}  {what}")
    return "\n".join(lines) + "\n"


DEMO_SDK_APP_ID = 1400000000
DEMO_ROOM_ID = 1234


def _demo_request(mode: str) -> RecordingRequest:
    return parse_request(
        {
            "SdkAppId": DEMO_SDK_APP_ID,
            "RoomId": DEMO_ROOM_ID,
            "UserId": "recorder_demo",
            "UserSig": "demo-signature",
            "CosConfig": {"Region": "ap-guangzhou", "Bucket": "demo-1250000000", "Path": "/demo"},
            "Mode": mode,
            "MaxIdleTime": 3,
        }
    )


def _print_result(document: ResultDocument, seconds: float) -> None:
    ok = len(document.Files) - len(document.failed)
    console = stdout_console()
    console.print(f"\nRecorded {ok} of {len(document.Files)} file(s) in {seconds:.1f} s:")
    console.print(files_table(document))
    # Plain print: the document is read back by programs, rich would style or wrap it.
    print("\nResult document:")
    print(json.dumps(document.model_dump(mode="json"), indent=2, ensure_ascii=False), flush=True)


def _run(request: RecordingRequest, script: SimScript, args: argparse.Namespace) -> int:
    # Imported here: Prefect takes a few seconds to import, and --help should not wait.
    from flows.record_room import run_request

    console = stderr_console()
    route_prefect_console(console, args.verbose)
    started = time.monotonic()
    watch = RunWatch(RecorderSettings().work_root, since=time.time())
    with (
        SimRoom(request.SdkAppId, request.room, script),
        ProgressDisplay(watch, console, f"room {request.room}"),
        _recordings_end_on_ctrl_c(watch),
    ):
        document, _ = run_request(request)
    _print_result(document, time.monotonic() - started)
    if args.result_file is not None:
        args.result_file.write_text(document.model_dump_json(indent=2))
    if document.failed:
        raise CommandError(f"{len(document.failed)} of {len(document.Files)} file(s) failed (see the table)")
    return 0


@contextmanager
def _recordings_end_on_ctrl_c(watch: RunWatch) -> Iterator[None]:
    """Ctrl-C ends the run's recordings at once, then interrupts as usual.

    On KeyboardInterrupt Prefect waits for the running tasks before its crash hook asks them
    to stop: a recording would go on until its anchor's stream ends. Asked here first (the
    run folder's stop request, which each recording looks for twice a second), they end in
    a moment, and the crash hook delivers what they recorded."""

    def interrupt(signum: int, frame: object) -> None:
        folder = watch.progress().folder
        if folder is not None:
            with suppress(OSError):
                Workspace(folder).request_stop(INTERRUPTED_BY_USER)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main one
        yield
        return
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", BAD_INPUT) from exc
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}", BAD_INPUT) from exc


def _demo(args: argparse.Namespace) -> int:
    request = _demo_request(args.mode)
    script = demo_script()
    print(
        f"Simulated room {request.room}: {', '.join(a.user_id for a in script.anchors)} publish "
        f"test patterns and tones; recording each as {MODE_NAMES[request.Mode]}.",
        flush=True,
    )
    return _run(request, script, args)


def _load_script(path: Path | None) -> SimScript | None:
    """The room script at `path` (the demo's without one); None, said on stderr, if invalid."""
    if path is None:
        return demo_script()
    try:
        return SimScript.model_validate(_load_json(path))
    except ValidationError as exc:
        print(f"recorder: error: {path} is not a valid room script:\n{exc}", file=sys.stderr)
        return None


def _record(args: argparse.Namespace) -> int:
    try:
        request = parse_request(_load_json(args.request))
    except RequestError as exc:
        print(f"recorder: error: {args.request} is not a valid request:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return BAD_INPUT
    script = _load_script(args.sim_script)
    if script is None:
        return BAD_INPUT
    return _run(request, script, args)


def _sim_room(args: argparse.Namespace) -> int:
    script = _load_script(args.script)
    if script is None:
        return BAD_INPUT
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    # SIGTERM (a supervisor, `kill`) and SIGINT (Ctrl-C) both end it the same clean way.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        room = SimRoom(args.sdk_app_id, args.room, script, port=args.port)
    except OSError as exc:
        raise CommandError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror}") from exc
    with room:
        # One line, flushed: whoever started us (a test, a script) reads the URL from it.
        print(
            f"sim room {room.sdk_app_id}/{room.room} on {room.control_url} "
            f"(set RECORDER_SIM_ROOM_URL={room.control_url})",
            flush=True,
        )
        # The script's clock starts at the recorder's first look, not here. Wait in slices:
        # the signal handler runs between them at the latest.
        while not stop.wait(timeout=1.0):
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder",
        description="Record each anchor of a real-time room into its own file (Prefect pipeline).",
        epilog=_examples(list(EXAMPLES), "examples"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    parser.add_argument(
        "--verbose", action="store_true", help="show Prefect's log lines (default: its warnings and errors)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="record a simulated room with two anchors (about 15 s)")
    demo.add_argument("--mode", choices=sorted(MODE_NAMES), default="02", help="as the request's Mode")
    demo.add_argument("--result-file", type=Path, help="also write the result document (JSON) here")
    demo.set_defaults(run=_demo)
    record = commands.add_parser("record", help="run one request (JSON file) through the flow, here")
    record.add_argument("request", type=Path, help="the request, as the original takes it")
    record.add_argument("--sim-script", type=Path, help="JSON script of the simulated room")
    record.add_argument("--result-file", type=Path, help="also write the result document (JSON) here")
    record.set_defaults(run=_record)
    sim_room = commands.add_parser(
        "sim-room",
        help="serve a simulated room on loopback for recorders in other processes (a Prefect worker)",
        description="Serve a simulated room on 127.0.0.1 until SIGTERM or Ctrl-C. A worker with "
        "RECORDER_SIM_ROOM_URL set to the printed URL records it; its script starts at the "
        "recorder's first look.",
    )
    sim_room.add_argument("--script", type=Path, help="JSON script of the room (default: the demo's)")
    sim_room.add_argument("--sdk-app-id", type=int, default=DEMO_SDK_APP_ID, help="default: the demo's")
    sim_room.add_argument("--room", default=str(DEMO_ROOM_ID), help="RoomId or StrRoomId (default: 1234)")
    sim_room.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free one)")
    sim_room.set_defaults(run=_sim_room)
    add_commands(commands)
    for name, command in commands.choices.items():
        command.epilog = _examples([name], "example")
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("recorder: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    except CommandError as exc:
        if args.debug:
            traceback.print_exc()
        error_line(str(exc))
        return exc.exit_code
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        error_line(str(exc) or type(exc).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())
