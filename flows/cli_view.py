"""What `recorder demo` and `recorder record` show: progress on stderr while the run records,
measured in its work folder on disk, and the table of files once it is over."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlparse

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from recorder.recovery import RUN_FILE, read_run_record, this_process
from recorder.result import ResultDocument
from recorder.run_summary import TakeProgress, take_progress
from recorder.workspace import CLOSED_FILE, Workspace

POLL_SECONDS = 0.25
PLAIN_EVERY_SECONDS = 10.0
# A run folder is written to within this long of the command starting at the latest; older
# ones are not even opened (a busy work folder holds many).
CLOCK_SLACK_SECONDS = 2.0

OK_SECONDS = re.compile(r"^ok: (\d+(?:\.\d+)?) s\b")


# -- Measuring a run on disk ----------------------------------------------------------------


@dataclass(frozen=True)
class RunProgress:
    folder: Path | None  # None: the run has not made its folder yet
    takes: tuple[TakeProgress, ...]
    closed: bool  # the room is over for the run: its files are being finished


def find_run_folder(work_root: Path, since: float) -> Path | None:
    """This process's run folder under `work_root`, made after `since` (time.time()).

    The flow run's id, which names the folder, comes from the Prefect API once the flow has
    started, so the command cannot know the name beforehand. Instead: every run writes
    run.json on joining, naming the process that records it (host, pid and the pid's start
    time, so a reused pid does not match). A folder whose run.json names this process and
    was written after the command started is this command's run; runs of other processes in
    the same work folder (a worker, another `recorder`) never match, and a folder left by an
    earlier process with the same pid is too old. Should there be several, the newest wins."""
    me = this_process()
    newest: tuple[float, Path] | None = None
    try:
        folders = [p for p in work_root.iterdir() if p.is_dir()]
    except OSError:  # no work folder yet
        return None
    for folder in folders:
        try:
            written = (folder / RUN_FILE).stat().st_mtime
            if written < since - CLOCK_SLACK_SECONDS:
                continue
            record = read_run_record(folder)
        except (OSError, ValueError):  # being written or removed right now: next look
            continue
        if record is not None and record.owner == me and (newest is None or written > newest[0]):
            newest = (written, folder)
    return newest[1] if newest else None


def _measure_takes(workspace: Workspace, closed: bool) -> dict[str, TakeProgress]:
    """Each take's seconds and bytes so far, by take folder."""
    return {
        take.name: take_progress(take, workspace.folder(take), ended=closed) for take in workspace.takes()
    }


class RunWatch:
    """Looks at this command's run folder a few times a second in a thread of its own,
    from `start()` until `stop()`; `progress()` is the latest look."""

    def __init__(self, work_root: Path, since: float) -> None:
        self._work_root = work_root
        self._since = since
        self._folder: Path | None = None
        # Takes stay once seen: the run removes each take's folder once its file is stored.
        self._takes: dict[str, TakeProgress] = {}
        self._closed = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="run-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5.0)

    def progress(self) -> RunProgress:
        return RunProgress(self._folder, tuple(self._takes.values()), self._closed)

    def _watch(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            if self._folder is None:
                self._folder = find_run_folder(self._work_root, self._since)
                continue
            # The run removes its folder once every file is stored: over too.
            self._closed = (self._folder / CLOSED_FILE).exists() or not self._folder.exists()
            try:
                measured = _measure_takes(Workspace(self._folder), self._closed)
            except (OSError, ValueError):
                # A take or segment removed as it was read (the run cleans up as files are
                # stored): the last look stands.
                continue
            self._takes = self._takes | measured


# -- Showing it ---------------------------------------------------------------------------


def stderr_console() -> Console:
    # No markup or highlighting: Prefect's log messages are printed through it too, and a
    # message holding "[...]" is text, not a style.
    return Console(stderr=True, markup=False, highlight=False)


def route_prefect_console(console: Console, verbose: bool) -> None:
    """Prefect's console logging through `console`, warnings and errors only unless verbose.

    Its handler has a rich Console of its own, writing straight to the terminal: under a
    live display its lines would tear the display apart. Printed through the display's
    console they appear above it instead. Only the console handler is quieted: the run's
    logs still reach the Prefect API in full."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.console = console
                if not verbose:
                    handler.setLevel(max(handler.level, logging.WARNING))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


class ProgressDisplay:
    """While a run records: a live display on a terminal (elapsed time, and each anchor's
    seconds and MB so far); elsewhere (a log, a pipe) one plain line every 10 s."""

    def __init__(self, watch: RunWatch, console: Console, what: str) -> None:
        self._watch = watch
        self._console = console
        self._what = what
        self._started = time.monotonic()
        self._spinner = Spinner("dots")
        self._live: Live | None = None
        self._plain_stop = threading.Event()
        self._plain = threading.Thread(target=self._print_plain, name="plain-progress", daemon=True)

    def __enter__(self) -> ProgressDisplay:
        self._watch.start()
        if self._console.is_terminal:
            self._live = Live(
                console=self._console, get_renderable=self._render, refresh_per_second=8, transient=True
            )
            self._live.start()
        else:
            self._plain.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._watch.stop()
        if self._live is not None:
            self._live.stop()
        self._plain_stop.set()
        if self._plain.is_alive():
            self._plain.join(timeout=5.0)

    def _headline(self, progress: RunProgress) -> str:
        elapsed = _clock(time.monotonic() - self._started)
        if progress.folder is None:
            return f"{self._what}: starting the run ({elapsed})"
        if progress.closed:
            return f"{self._what}: finishing the files ({elapsed})"
        if not progress.takes:
            return f"{self._what}: waiting for anchors ({elapsed})"
        return f"{self._what}: recording ({elapsed})"

    def _render(self) -> RenderableType:
        progress = self._watch.progress()
        self._spinner.update(text=Text(self._headline(progress)))
        if not progress.takes:
            return self._spinner
        table = Table(box=None, padding=(0, 2), show_edge=False)
        table.add_column("anchor")
        table.add_column("recorded", justify="right")
        table.add_column("size", justify="right")
        for take in progress.takes:
            table.add_row(take.anchor, f"{take.seconds:.1f} s", _megabytes(take.bytes))
        return Group(self._spinner, table)

    def _print_plain(self) -> None:
        while not self._plain_stop.wait(PLAIN_EVERY_SECONDS):
            progress = self._watch.progress()
            takes = "; ".join(f"{t.anchor} {t.seconds:.1f} s {_megabytes(t.bytes)}" for t in progress.takes)
            line = self._headline(progress) + (f": {takes}" if takes else "")
            print(line, file=sys.stderr, flush=True)


def _where(url: str) -> str:
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else url


def _local_size(url: str) -> int | None:
    if urlparse(url).scheme != "file":
        return None
    try:
        return Path(_where(url)).stat().st_size
    except OSError:
        return None


def files_table(document: ResultDocument) -> Table:
    """One row per file: anchor, ok/FAILED, duration, size, and where it is (or why not)."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("anchor", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("file", overflow="fold")
    for entry in document.Files:
        if entry.Status == 1:
            seconds = OK_SECONDS.match(entry.Message)
            size = _local_size(entry.RecordFile)
            table.add_row(
                entry.UserId,
                Text("ok", style="green"),
                f"{seconds.group(1)} s" if seconds else "",
                _megabytes(size) if size is not None else "",
                _where(entry.RecordFile),
            )
        else:
            table.add_row(entry.UserId, Text("FAILED", style="bold red"), "", "", entry.Message)
    return table


def stdout_console() -> Console:
    # A log or a pipe has no width: a path must not be cut or folded there (it is read back).
    return Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 10_000)


def error_line(message: str) -> None:
    """The one line a failed command says on stderr."""
    print(f"recorder: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
