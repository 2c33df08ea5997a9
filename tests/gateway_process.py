"""The gateway as it is deployed: `recorder serve` in its own process, on a loopback port,
against a PrefectService, for the length of a `with` block."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.prefect_service import REPO_ROOT, PrefectService

START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gateway_process(
    prefect: PrefectService,
    log_path: Path,
    env: dict[str, str],
    *,
    port: int | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[httpx.Client]:
    """A client of a running gateway (its /health answered); `env` is added to the service's
    client environment (RECORDER_* settings). What it prints goes to `log_path`."""
    port = port or free_port()
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=prefect.env() | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
                deadline = time.monotonic() + START_SECONDS
                while not _healthy(client):
                    if gateway.poll() is not None or time.monotonic() > deadline:
                        printed = log_path.read_text(errors="replace")
                        raise RuntimeError(f"the gateway did not start:\n{printed}")
                    time.sleep(0.25)
                yield client
        finally:
            gateway.terminate()
            try:
                gateway.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(timeout=5)


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False
