"""The service's commands: `recorder serve`, `service-key`, `seal` and `usersig`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from pathlib import Path

from flows.cli_view import error_line
from recorder.request import RequestError, parse_request
from recorder.sealing import SealError, new_service_key, public_parameters, seal_secrets
from recorder.settings import RecorderSettings
from recorder.usersig import DEFAULT_EXPIRE_SECONDS, generate_usersig

USERSIG_KEY_ENV = "RECORDER_TRTC_SDK_SECRET_KEY"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    settings = RecorderSettings()
    if settings.service_key is None:
        error_line(
            "RECORDER_SERVICE_KEY is not set: the gateway seals each request's secrets with it "
            "(make one with `recorder service-key`; give the workers the same one)"
        )
        return 2
    if not _is_loopback(args.host) and settings.api_keys is None:
        error_line(
            f"refusing to listen on {args.host} without RECORDER_API_KEYS: "
            "beyond loopback every request must carry an API key"
        )
        return 2
    # Imported here: FastAPI and Prefect's client take a while, and --help should not wait.
    import uvicorn

    from deployments.gateway import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def service_key(args: argparse.Namespace) -> int:
    print(new_service_key())
    return 0


def seal(args: argparse.Namespace) -> int:
    """A request file as a deployment's parameters: public part plus sealed secrets."""
    try:
        request = parse_request(json.loads(Path(args.request).read_text()))
        sealed = seal_secrets(request, RecorderSettings().service_key)
    except (OSError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, RequestError) else [str(exc)]
        print(f"recorder: error: cannot seal {args.request}:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    except SealError as exc:
        error_line(str(exc))
        return 2
    print(json.dumps({"request": public_parameters(request), "sealed_secrets": sealed}, indent=2))
    return 0


def usersig(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(USERSIG_KEY_ENV, "")
    if not key:
        error_line(f"give --key or set {USERSIG_KEY_ENV} (the application's SDK secret key)")
        return 2
    print(generate_usersig(args.sdkappid, key, args.userid, args.expire))
    return 0


def recover(args: argparse.Namespace) -> int:
    from flows.recover import recover_recordings

    finished = recover_recordings()
    print(f"recovered {len(finished)} recording(s)", *finished, sep="\n  " if finished else "")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    served = commands.add_parser(
        "serve",
        help="the HTTP gateway: POST requests, they become runs of the record-room deployment",
        description="Serve the gateway (see deployments/README.md). Needs RECORDER_SERVICE_KEY, and "
        "RECORDER_API_KEYS when listening beyond loopback; PREFECT_API_URL names the Prefect server.",
    )
    served.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    served.add_argument("--port", type=int, default=8080, help="default 8080")
    served.set_defaults(run=serve)
    key = commands.add_parser("service-key", help="print a new RECORDER_SERVICE_KEY")
    key.set_defaults(run=service_key)
    sealed = commands.add_parser(
        "seal", help="print a request file as deployment parameters, its secrets sealed (for schedules)"
    )
    sealed.add_argument("request", type=Path)
    sealed.set_defaults(run=seal)
    signer = commands.add_parser(
        "usersig",
        help="generate a TRTC UserSig (TLS signature v2) for a user, to test with",
        description="Generate a UserSig with the application's SDK secret key (TRTC console: "
        f"Application Management > UserSig Tools). The key may come from {USERSIG_KEY_ENV} instead "
        "of --key, to keep it out of the shell's history.",
    )
    signer.add_argument("--sdkappid", type=int, required=True)
    signer.add_argument("--userid", required=True)
    signer.add_argument("--key", help=f"the SDK secret key (default: ${USERSIG_KEY_ENV})")
    signer.add_argument(
        "--expire", type=int, default=DEFAULT_EXPIRE_SECONDS, help="seconds (default 180 days)"
    )
    signer.set_defaults(run=usersig)
    recovering = commands.add_parser(
        "recover",
        help="finish the recordings of this machine whose process died (run it before a worker starts)",
        description="Find run folders under the work folder whose recording process is gone and whose "
        "result was never reported; turn their segments into files, store them, publish the result on "
        "the run and POST it to its Callback once. Runs that are alive are left alone.",
    )
    recovering.set_defaults(run=recover)
