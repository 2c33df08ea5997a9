"""The service as production runs it (deployments/README.md), each part a real process on loopback:
`prefect server start`, the `recorders` process work pool, the deployments of the repository's
prefect.yaml (`prefect deploy --all`) and `prefect worker start --pool recorders`.

    with PrefectService(tmp_path / "prefect", env={"RECORDER_STORAGE_DIR": str(out)}) as service:
        subprocess.run([...], env=service.env())           # a client process
        with service.client_settings():                    # or Prefect clients in this thread
            run_deployment(DEPLOYMENT, parameters=..., timeout=0)

Start-up takes about 20 s on two idle cores the first time in a test session (most of it the
server migrating a new SQLite database) and about 13 s after that (see `_MigratedDatabase`);
stop() well under a second.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
POOL = "recorders"
DEPLOYMENT = "record-room/record-room"
WORKER_NAME = "test-worker"

SERVER_START_SECONDS = 90.0
COMMAND_SECONDS = 90.0  # one `prefect work-pool create` / `prefect deploy` (imports alone take ~3 s)
WORKER_START_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 60


class PrefectService:
    """A Prefect server + work pool + deployment + worker, each a real process, on loopback."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        *,
        project_dir: Path = REPO_ROOT,
        database_url: str | None = None,
        workers: dict[str, int | None] | None = None,
    ) -> None:
        """`home` is PREFECT_HOME of every process (database, results, logs); `env` is extra
        environment for the workers and so for their flow runs (RECORDER_* settings, say).
        `database_url`: the server's database (PostgreSQL for several workers); default a
        SQLite file in `home`. `workers`: their names and capacities (`--limit`, None: no
        limit); default one worker without a limit."""
        self.home = home.resolve()
        self.database_url = database_url
        self.worker_limits = dict(workers or {WORKER_NAME: None})
        self.project_dir = project_dir.resolve()
        self.worker_env = dict(env or {})
        self.port = 0
        self.api_url = ""
        # Set explicitly (not left to Prefect's defaults) so tests know which files to read.
        self.database = self.home / "prefect.db"
        self.results = self.home / "storage"
        self.log_dir = self.home / "logs"
        self._server: subprocess.Popen[bytes] | None = None
        self._workers: dict[str, subprocess.Popen[bytes]] = {}
        self._worker_stops_gracefully = True
        self._log_files: list[IO[bytes]] = []

    # -- the API -------------------------------------------------------------------------------

    def start(self) -> PrefectService:
        """Server (until /api/health answers), work pool, deployments, worker (until registered
        with the pool). Whatever started is stopped again if a step fails."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        try:
            self._start_server()
            self._run(
                "work-pool", "work-pool", "create", POOL, "--type", "process", "--overwrite", cwd=self.home
            )
            # The worker's graceful stop is a SIGINT it sends itself on SIGTERM. A child inherits
            # an ignored SIGINT (pytest started by `cmd &` from a script): then that SIGINT never
            # lands, and waiting for it would only add the grace period before the SIGKILL.
            self._worker_stops_gracefully = signal.getsignal(signal.SIGINT) != signal.SIG_IGN
            # The worker needs only the pool, and its imports take seconds: start it while
            # `prefect deploy` runs rather than after it.
            for name in self.worker_limits:
                self._workers[name] = self._spawn_worker(name)
            # In the project root: the pull step's `{{ $PWD }}` becomes the flow runs' directory.
            self._run("deploy", "deploy", "--all", cwd=self.project_dir)
            for name in self.worker_limits:
                self._wait_for_worker(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Worker, then server: SIGTERM, a grace period, then SIGKILL; flow runs the worker
        left behind are killed too. Safe to call more than once."""
        try:
            workers, self._workers = self._workers, {}
            for worker in workers.values():
                _terminate(worker, STOP_GRACE_SECONDS if self._worker_stops_gracefully else 0.0)
        finally:
            try:
                if self._server is not None:
                    server, self._server = self._server, None
                    _terminate(server, STOP_GRACE_SECONDS)
            finally:
                for file in self._log_files:
                    file.close()
                self._log_files.clear()

    def __enter__(self) -> PrefectService:
        return self.start()

    # -- faults: the tests of what survives a dead process ----------------------------------------

    def flow_run_processes(self, run_id: object) -> list[int]:
        """The pids of the processes the worker runs flow run `run_id` in (the engine may run
        the flow in a child of its own), outermost first; [] once they are gone."""
        wanted = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
        found = []
        for child in {c for worker in self._workers.values() for c in _descendants(worker.pid)}:
            try:
                environ = Path(f"/proc/{child.pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if wanted in environ:
                found.append(child.pid)
        return sorted(found, key=lambda pid: int(_stat(pid)[1] or 0))

    def worker_of(self, flow_run_pid: int) -> str | None:
        """The worker that started the process `flow_run_pid` (a flow run's), if any."""
        for name, worker in self._workers.items():
            if any(child.pid == flow_run_pid for child in _descendants(worker.pid)):
                return name
        return None

    def kill_worker(self, name: str = WORKER_NAME) -> None:
        """SIGKILL to a worker and everything it started: a machine that lost power."""
        worker = self._workers.pop(name, None)
        if worker is None:
            return
        family = _descendants(worker.pid)
        worker.kill()
        for child in family:
            child.signal(signal.SIGKILL)
        worker.wait(timeout=STOP_GRACE_SECONDS)

    def restart_worker(self, name: str = WORKER_NAME) -> None:
        """A worker again, after `kill_worker` (until it is registered with the pool)."""
        if name in self._workers:
            raise RuntimeError(f"worker {name} is running")
        self._workers[name] = self._spawn_worker(name)
        self._wait_for_worker(name)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """A whole environment for a client process of this service (subprocess `env=`): the
        caller's without any PREFECT_* of its own (a developer's PREFECT_API_URL must not win),
        plus PREFECT_API_URL, PREFECT_HOME, results under home, analytics off."""
        if not self.api_url:
            raise RuntimeError("the service has not started")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_LOCAL_STORAGE_PATH=str(self.results),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_CLI_PROMPT="false",
            PYTHONUNBUFFERED="1",  # so logs() shows what a process printed up to now
        )
        return env

    def client_settings(self) -> AbstractContextManager[Any]:
        """Prefect clients of *this thread* use this service (Prefect reads its environment once,
        at import). Settings are a context variable: threads started inside do not inherit them."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def logs(self) -> str:
        """What every process of the service printed so far (stdout and stderr), file by file."""
        return "\n".join(
            f"===== {path.name} =====\n{path.read_text(errors='replace')}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    def database_files(self) -> list[Path]:
        """The database and its write-ahead log: recent writes are in `-wal` until SQLite
        checkpoints, so a search of the database for a secret must read both."""
        return [p for p in (self.database, Path(f"{self.database}-wal")) if p.is_file()]

    # -- the parts -----------------------------------------------------------------------------

    def _start_server(self) -> None:
        if self.database_url is None:
            _MigratedDatabase.copy_to(self.database)
        for _attempt in range(3):
            self.port = _free_port()
            self.api_url = f"http://127.0.0.1:{self.port}/api"
            server_env = self.env()
            server_env.update(
                PREFECT_API_DATABASE_CONNECTION_URL=self.database_url
                or f"sqlite+aiosqlite:///{self.database}",
                PREFECT_SERVER_UI_ENABLED="false",
            )
            printed_before = len(self._read("server"))
            self._server = self._spawn(
                "server",
                ["server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"],
                server_env,
            )
            if self._wait_for_health(printed_before):
                if self.database_url is None:
                    _MigratedDatabase.keep(self.database)
                return
            # Another process took the port between _free_port() and the bind: another port.
            self._server = None
        raise RuntimeError(f"prefect server found no free port\n{self._tail('server')}")

    def _wait_for_health(self, printed_before: int) -> bool:
        """True once the API answers; False if the port was taken; raises on anything else."""
        assert self._server is not None
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                if "already in use" in self._read("server")[printed_before:]:
                    return False
                raise RuntimeError(
                    f"prefect server exited ({self._server.returncode})\n{self._tail('server')}"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return True
            time.sleep(0.2)
        raise TimeoutError(
            f"prefect server not healthy after {SERVER_START_SECONDS:.0f} s\n{self._tail('server')}"
        )

    def _spawn_worker(self, name: str) -> subprocess.Popen[bytes]:
        limit = self.worker_limits[name]
        command = self._worker_command(name) + ([] if limit is None else ["--limit", str(limit)])
        return self._spawn(
            name if len(self.worker_limits) > 1 else "worker", command, self._worker_environment()
        )

    def _worker_command(self, name: str) -> list[str]:
        return [
            "worker",
            "start",
            "--pool",
            POOL,
            "--name",
            name,
            "--install-policy",
            "never",  # the process worker is built in; never reach for a package index
            "--no-create-pool-if-not-found",  # a missing pool is a bug here, not a default
        ]

    def _worker_environment(self) -> dict[str, str]:
        env = self.env()
        env.update(
            # Look for scheduled runs every second (default 10 s): a run starts within ~1 s.
            PREFECT_WORKER_QUERY_SECONDS="1",
            # Heartbeats keep the worker ONLINE; the default 30 s is slow for a short test.
            PREFECT_WORKER_HEARTBEAT_SECONDS="5",
        )
        env.update(self.worker_env)
        return env

    def _wait_for_worker(self, name: str) -> None:
        worker = self._workers[name]
        log = name if len(self.worker_limits) > 1 else "worker"
        deadline = time.monotonic() + WORKER_START_SECONDS
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"prefect worker {name} exited ({worker.returncode})\n{self._tail(log)}")
            with suppress(httpx.HTTPError):
                answer = httpx.post(f"{self.api_url}/work_pools/{POOL}/workers/filter", json={}, timeout=5)
                if any(w["name"] == name and w["status"] == "ONLINE" for w in answer.json()):
                    return
            time.sleep(0.2)
        raise TimeoutError(
            f"prefect worker {name} not registered with pool {POOL!r} after {WORKER_START_SECONDS:.0f} s\n"
            f"{self._tail(log)}"
        )

    # -- processes and their logs ----------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        self._log_files.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", *args],
            cwd=self.home,  # not the project: `python -m` puts the working directory on sys.path
            env={**env, "PWD": str(self.home)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _run(self, name: str, *args: str, cwd: Path) -> None:
        """One CLI command to its end, its output in logs/{name}.log."""
        with (self.log_dir / f"{name}.log").open("ab") as log:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "prefect", *args],
                    cwd=cwd,
                    # Prefect's `{{ $PWD }}` reads the variable, not the working directory, and
                    # a child inherits the caller's PWD whatever its `cwd`: as a shell would.
                    env={**self.env(), "PWD": str(cwd)},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=COMMAND_SECONDS,
                )
            except subprocess.TimeoutExpired:
                raise TimeoutError(
                    f"prefect {' '.join(args)}: no end after {COMMAND_SECONDS:.0f} s\n{self._tail(name)}"
                ) from None
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({done.returncode})\n{self._tail(name)}")

    def _read(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def _tail(self, name: str) -> str:
        lines = self._read(name).splitlines()[-LOG_TAIL_LINES:]
        return f"--- last lines of {self.log_dir / name}.log ---\n" + "\n".join(lines)


@contextmanager
def prefect_service(home: Path, env: dict[str, str] | None = None) -> Iterator[PrefectService]:
    """`with prefect_service(tmp_path / "prefect") as service:` the same as PrefectService."""
    with PrefectService(home, env) as service:
        yield service


class _MigratedDatabase:
    """A new SQLite database costs the server ~12 s of migrations on two cores. The first server
    of a test session leaves a copy of its database as it was once it answered (migrated, block
    types registered, nothing of any test in it) and later servers start from that copy, as a
    production server restarts on a migrated database."""

    _copy: Path | None = None

    @classmethod
    def copy_to(cls, database: Path) -> None:
        if cls._copy is not None and not database.exists():
            shutil.copyfile(cls._copy, database)

    @classmethod
    def keep(cls, database: Path) -> None:
        if cls._copy is not None:
            return
        folder = Path(tempfile.mkdtemp(prefix="prefect-migrated-db-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        copy = folder / "prefect.db"
        # SQLite's backup API: a consistent copy (WAL included) while the server writes.
        with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        cls._copy = copy


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the process and its children (a worker's flow runs, which it would otherwise
    wait for), SIGKILL to whatever is left after the grace period."""
    family = _descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    for child in family:
        child.signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        family |= _descendants(process.pid)
        process.kill()
        process.wait(timeout=STOP_GRACE_SECONDS)
    for child in family:
        child.signal(signal.SIGKILL)


@dataclass(frozen=True)
class _Pid:
    """A process id with its start time, so a later signal cannot reach a recycled id."""

    pid: int
    started: str

    def signal(self, signum: int) -> None:
        if _stat(self.pid)[1] == self.started:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)


def _stat(pid: int) -> tuple[int, str]:
    """(parent pid, start time) from /proc; (0, "") if gone or there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, ""
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (command name) "
    return int(fields[1]), fields[19]


def _descendants(pid: int) -> set[_Pid]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else []:
        parent = _stat(int(entry.name))[0]
        children.setdefault(parent, []).append(int(entry.name))
    found: set[_Pid] = set()
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        started = _stat(child)[1]
        if started:
            found.add(_Pid(child, started))
            stack.extend(children.get(child, []))
    return found
