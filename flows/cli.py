"""The `recorder` command: run the pipeline here, on the simulated room or a request file."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from flows.service_commands import add_commands
from recorder.request import MODE_NAMES, RecordingRequest, RequestError, parse_request
from recorder.result import ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimScript, demo_script

EXAMPLES = """\
examples:
  recorder demo                      two simulated anchors, ~15 s, MP4 audio+video
  recorder demo --mode 00            the same as MP3 audio files
  recorder record request.json       one request (the original's JSON) through the flow
  recorder record request.json --sim-script room.json
  recorder sim-room --port 8765      serve the demo room for a worker's runs (RECORDER_SIM_ROOM_URL)
  recorder serve --port 8080         the HTTP gateway in front of the record-room deployment
  recorder service-key               a new RECORDER_SERVICE_KEY for the gateway and workers
"""

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


def _local_path(url: str) -> str:
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else url


def _print_summary(document: ResultDocument, seconds: float) -> None:
    ok = len(document.Files) - len(document.failed)
    print(f"\nRecorded {ok} of {len(document.Files)} file(s) in {seconds:.1f} s:")
    width = max((len(f.UserId) for f in document.Files), default=0)
    for entry in document.Files:
        where = _local_path(entry.RecordFile) if entry.Status == 1 else entry.Message
        print(f"  {entry.UserId:<{width}}  {'ok    ' if entry.Status == 1 else 'FAILED'}  {where}")
    print("\nResult document:")
    print(json.dumps(document.model_dump(mode="json"), indent=2, ensure_ascii=False))


def _run(request: RecordingRequest, script: SimScript, result_file: Path | None) -> int:
    # Imported here: Prefect takes a few seconds to import, and --help should not wait.
    from flows.record_room import run_request

    started = time.monotonic()
    with SimRoom(request.SdkAppId, request.room, script):
        document, _ = run_request(request)
    _print_summary(document, time.monotonic() - started)
    if result_file is not None:
        result_file.write_text(document.model_dump_json(indent=2))
    return 0 if not document.failed else 1


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise SystemExit(f"recorder: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"recorder: {path} is not valid JSON: {exc}") from None


def _demo(args: argparse.Namespace) -> int:
    request = _demo_request(args.mode)
    script = demo_script()
    print(
        f"Simulated room {request.room}: {', '.join(a.user_id for a in script.anchors)} publish "
        f"test patterns and tones; recording each as {MODE_NAMES[request.Mode]}."
    )
    return _run(request, script, args.result_file)


def _load_script(path: Path | None) -> SimScript | None:
    """The room script at `path` (the demo's without one); None, said on stderr, if invalid."""
    if path is None:
        return demo_script()
    try:
        return SimScript.model_validate(_load_json(path))
    except ValidationError as exc:
        print(f"recorder: {path} is not a valid room script:\n{exc}", file=sys.stderr)
        return None


def _record(args: argparse.Namespace) -> int:
    try:
        request = parse_request(_load_json(args.request))
    except RequestError as exc:
        print(f"recorder: {args.request} is not a valid request:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    script = _load_script(args.sim_script)
    if script is None:
        return 2
    return _run(request, script, args.result_file)


def _sim_room(args: argparse.Namespace) -> int:
    script = _load_script(args.script)
    if script is None:
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    # SIGTERM (a supervisor, `kill`) and SIGINT (Ctrl-C) both end it the same clean way.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        room = SimRoom(args.sdk_app_id, args.room, script, port=args.port)
    except OSError as exc:
        print(f"recorder: cannot serve on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
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
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
