"""The gateway's Prometheus metrics (GET /metrics).

The recordings run in Prefect workers, other processes and maybe other machines: what they
did is read from the Prefect API, the one place all of them report to, at scrape time.

    recorder_active_recordings          gauge    record-room flow runs in state RUNNING
    recorder_recorded_bytes_total       counter  size_bytes summed over the "Recorded files"
                                                 table artifacts (one per finished run)
    recorder_upload_failures_total      counter  record-room task runs `upload-…` that FAILED
                                                 (after all their retries)
    recorder_callback_failures_total    counter  record-room task runs `callback-…` that FAILED
    recorder_prefect_api_up             gauge    1 when the reads above worked, else 0 (and
                                                 they are left out of that answer)
    recorder_requests_total{outcome}    counter  this gateway's answers to POST / and POST
                                                 /recordings: accepted (202), refused (4xx)

No label carries a room, a user or a URL: labels stay few, and metrics hold no secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import Artifact, StateType, TaskRun
from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The flow side's contract: each finished record-room run leaves one table artifact with this
# description ("Recorded files"), a row per file with an int size_bytes.
from flows.artifacts import FILES_TABLE_DESCRIPTION

log = logging.getLogger(__name__)
Item = TypeVar("Item")

RECORD_ROOM_FLOW = "record-room"
# tasks/upload.py names its runs upload-{anchor}; tasks/callback.py leaves Prefect's default,
# callback-{n}.
UPLOAD_RUN_PREFIX = "upload-"
CALLBACK_RUN_PREFIX = "callback-"
# A scrape waits this long for the Prefect API (Prometheus's own scrape timeout is 10 s).
READ_TIMEOUT_SECONDS = 5.0
# Each request to the Prefect API (Prefect's client retries a few, with backoff): a read that
# outlasts its scrape goes on (see GatewayMetrics._read_once), but not for ever.
REQUEST_TIMEOUT_SECONDS = 5.0
# The Prefect API's largest page (PREFECT_SERVER_API_DEFAULT_LIMIT). A read starts with a
# small page: between two scrapes a few runs finish, not hundreds.
ARTIFACT_PAGE_SIZE = 200
FIRST_PAGE_SIZE = 20
# An artifact is one insert: it is visible well within this of its `created` time. Artifacts
# this much older than the newest one summed are taken as summed already.
ARTIFACT_OVERLAP = timedelta(seconds=60)
# A task run's state reaches the API as an event, some seconds after its end_time (the
# worker's clock): failures this much older than the newest one counted are taken as counted.
TASK_RUN_OVERLAP = timedelta(minutes=10)


@dataclass(frozen=True)
class PrefectReading:
    """What one scrape read from the Prefect API."""

    active_recordings: int
    recorded_bytes: int
    upload_failures: int
    callback_failures: int


def files_table_bytes(data: Any) -> int:
    """The sum of a table artifact's size_bytes column. Prefect stores a table as JSON, rows
    (a list of dicts) or columns (a dict of lists); anything that is not an int counts 0."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return 0
    if isinstance(data, list):
        sizes = [row.get("size_bytes") for row in data if isinstance(row, dict)]
    elif isinstance(data, dict) and isinstance(data.get("size_bytes"), list):
        sizes = data["size_bytes"]
    else:
        return 0
    return sum(size for size in sizes if isinstance(size, int) and not isinstance(size, bool) and size > 0)


@dataclass(frozen=True)
class Counted:
    """One object of a running total: its id, its time (for the overlap window), its value."""

    id: UUID
    at: datetime | None
    value: int


# A page of objects, newest first: (client, limit, offset) -> objects.
FetchPage = Callable[[PrefectClient, int, int], Awaitable[Sequence[Item]]]


class RunningTotal(Generic[Item]):
    """A total over Prefect objects that only grows, read incrementally: each object adds its
    value once.

    Each read pages through the objects newest first and stops at the first page that reaches
    `overlap` behind the newest object counted before; the ids counted within that window are
    kept so none counts twice. The first read counts all history. Newest first keeps offset
    paging safe while objects are added: new ones push the rest down, so one may be seen twice
    (and is skipped), none is missed. A read that fails changes nothing. An object that becomes
    visible more than `overlap` after its time is missed."""

    def __init__(
        self,
        fetch: FetchPage[Item],
        measure: Callable[[Item], Counted],
        *,
        page_size: int = ARTIFACT_PAGE_SIZE,
        overlap: timedelta,
    ) -> None:
        self.total = 0
        # Objects looked at by the last read: what a scrape costs.
        self.last_read_count = 0
        self._fetch = fetch
        self._measure = measure
        self._page_size = page_size
        self._overlap = overlap
        self._newest: datetime | None = None
        self._counted: dict[UUID, datetime | None] = {}

    async def read(self, client: PrefectClient) -> int:
        horizon = None if self._newest is None else self._newest - self._overlap
        found: dict[UUID, Counted] = {}
        looked_at = 0
        offset = 0
        limit = min(FIRST_PAGE_SIZE, self._page_size)
        while True:
            page = [self._measure(item) for item in await self._fetch(client, limit, offset)]
            looked_at += len(page)
            for item in page:
                if item.id in self._counted or item.id in found:
                    continue
                if horizon is not None and item.at is not None and item.at < horizon:
                    continue
                found[item.id] = item
            oldest = page[-1].at if page else None
            if len(page) < limit or (horizon is not None and oldest is not None and oldest < horizon):
                break
            offset += limit
            limit = self._page_size
        self._commit(found.values())
        self.last_read_count = looked_at
        return self.total

    def _commit(self, found: Iterable[Counted]) -> None:
        for item in found:
            self._counted[item.id] = item.at
            self.total += item.value
            if item.at is not None and (self._newest is None or item.at > self._newest):
                self._newest = item.at
        if self._newest is not None:
            horizon = self._newest - self._overlap
            self._counted = {key: at for key, at in self._counted.items() if at is None or at >= horizon}


async def _table_artifacts(client: PrefectClient, limit: int, offset: int) -> list[Artifact]:
    return await client.read_artifacts(
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["table"])),
        sort=ArtifactSort.CREATED_DESC,
        limit=limit,
        offset=offset,
    )


def _recorded_bytes(artifact: Artifact) -> Counted:
    recorded = artifact.description == FILES_TABLE_DESCRIPTION
    return Counted(artifact.id, artifact.created, files_table_bytes(artifact.data) if recorded else 0)


def _failed_task_runs(name_prefix: str) -> FetchPage[TaskRun]:
    """FAILED task runs of record-room whose name contains `name_prefix`, latest ending first
    (the API's name filter is a substring match: `_failure` checks the prefix)."""
    flows = FlowFilter(name=FlowFilterName(any_=[RECORD_ROOM_FLOW]))
    failed = TaskRunFilter(
        name=TaskRunFilterName(like_=name_prefix),
        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED])),
    )

    async def fetch(client: PrefectClient, limit: int, offset: int) -> list[TaskRun]:
        return await client.read_task_runs(
            flow_filter=flows,
            task_run_filter=failed,
            sort=TaskRunSort.END_TIME_DESC,
            limit=limit,
            offset=offset,
        )

    return fetch


def _failure(name_prefix: str) -> Callable[[TaskRun], Counted]:
    # A record-… or transcode-… run of an anchor whose UserId holds "upload-" matches the
    # filter too: only the prefix counts.
    return lambda run: Counted(run.id, run.end_time, 1 if run.name.startswith(name_prefix) else 0)


class PrefectReader:
    """Every Prefect-side metric, read in one go. `overlap`: one window for every running
    total (tests); None, each its own."""

    def __init__(self, page_size: int = ARTIFACT_PAGE_SIZE, overlap: timedelta | None = None) -> None:
        self.recorded_bytes = RunningTotal(
            _table_artifacts,
            _recorded_bytes,
            page_size=page_size,
            overlap=ARTIFACT_OVERLAP if overlap is None else overlap,
        )
        self.upload_failures = RunningTotal(
            _failed_task_runs(UPLOAD_RUN_PREFIX),
            _failure(UPLOAD_RUN_PREFIX),
            page_size=page_size,
            overlap=TASK_RUN_OVERLAP if overlap is None else overlap,
        )
        self.callback_failures = RunningTotal(
            _failed_task_runs(CALLBACK_RUN_PREFIX),
            _failure(CALLBACK_RUN_PREFIX),
            page_size=page_size,
            overlap=TASK_RUN_OVERLAP if overlap is None else overlap,
        )

    async def read(self, client: PrefectClient) -> PrefectReading:
        record_room = FlowFilter(name=FlowFilterName(any_=[RECORD_ROOM_FLOW]))
        running = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        )
        active = await client.count_flow_runs(flow_filter=record_room, flow_run_filter=running)
        return PrefectReading(
            active_recordings=active,
            recorded_bytes=await self.recorded_bytes.read(client),
            upload_failures=await self.upload_failures.read(client),
            callback_failures=await self.callback_failures.read(client),
        )


def _default_client() -> PrefectClient:
    return get_client(httpx_settings={"timeout": REQUEST_TIMEOUT_SECONDS})


class PrefectCollector(Collector):
    """Renders the last reading; without one (the API could not be read), only
    recorder_prefect_api_up 0."""

    def __init__(self) -> None:
        self.reading: PrefectReading | None = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families(PrefectReading(0, 0, 0, 0), up=True))

    def collect(self) -> Iterable[Metric]:
        if self.reading is None:
            return list(self._families(None, up=False))
        return list(self._families(self.reading, up=True))

    @staticmethod
    def _families(reading: PrefectReading | None, up: bool) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "recorder_prefect_api_up",
            "1 when this scrape read the Prefect API, 0 when it could not (the recorder_* metrics "
            "read from it are then left out)",
            value=1 if up else 0,
        )
        if reading is None:
            return
        yield GaugeMetricFamily(
            "recorder_active_recordings",
            "Runs of the record-room flow in state RUNNING",
            value=reading.active_recordings,
        )
        yield CounterMetricFamily(
            "recorder_recorded_bytes",
            'Bytes of the recorded files: size_bytes summed over the "Recorded files" artifacts',
            value=reading.recorded_bytes,
        )
        yield CounterMetricFamily(
            "recorder_upload_failures",
            "Uploads of a recorded file that failed after all their retries",
            value=reading.upload_failures,
        )
        yield CounterMetricFamily(
            "recorder_callback_failures",
            "Result callbacks that failed after all their retries",
            value=reading.callback_failures,
        )


class GatewayMetrics:
    """The gateway's registry: the Prefect-side metrics, read on each `render`, and the
    answers this gateway gave to recording requests, counted in process."""

    def __init__(
        self,
        client: Callable[[], PrefectClient] | None = None,
        *,
        timeout: float = READ_TIMEOUT_SECONDS,
        page_size: int = ARTIFACT_PAGE_SIZE,
        overlap: timedelta | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.reader = PrefectReader(page_size, overlap)
        self._client = client or _default_client
        # How long a scrape waits for the Prefect API.
        self.read_timeout = timeout
        self._collector = PrefectCollector()
        self.registry.register(self._collector)
        self._requests = Counter(
            "recorder_requests",
            "Recording requests (POST / and POST /recordings) this gateway accepted (202) or refused (4xx)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("accepted", "refused"):
            self._requests.labels(outcome=outcome)
        self._pending: asyncio.Task[PrefectReading] | None = None

    def count_answer(self, status: int) -> None:
        if status == 202:
            self._requests.labels(outcome="accepted").inc()
        elif 400 <= status < 500:
            self._requests.labels(outcome="refused").inc()

    async def render(self) -> bytes:
        """The exposition text, within `read_timeout`; never raises for the Prefect API (down,
        slow, refusing): its metrics are then left out and recorder_prefect_api_up is 0."""
        try:
            self._collector.reading = await asyncio.wait_for(
                asyncio.shield(self._read_once()), self.read_timeout
            )
        except Exception as exc:  # any failure to read is "the API is not up", never a 500
            # The type only: an httpx error's text holds the API's URL, which may hold a key.
            log.warning("metrics: the Prefect API could not be read in time (%s)", type(exc).__name__)
            self._collector.reading = None
        return generate_latest(self.registry)

    def _read_once(self) -> asyncio.Task[PrefectReading]:
        """The read in flight, else a new one. Scrapes that overlap share one read (two would
        sum the same new artifacts), and a read that outlasts its scrape goes on for the next
        (the first read of a long history may take a few scrapes); each request of it is
        bounded by the client's timeout."""
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = self._pending = loop.create_task(self._read())
            # Its failure is reported by the scrape that waits for it, if one still does.
            pending.add_done_callback(lambda task: task.cancelled() or task.exception())
        return pending

    async def _read(self) -> PrefectReading:
        async with self._client() as client:
            return await self.reader.read(client)


class RequestOutcomes:
    """ASGI middleware: counts the status of every answer to POST on `paths` (the requests
    refused by the API-key check and the body checks included)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_answer(int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)
