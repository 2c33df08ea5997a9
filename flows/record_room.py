"""One flow run per request: join → record (one task per anchor) → transcode → upload →
callback → cleanup. Each anchor's steps are chained futures, so one anchor's failure never
holds up or loses another's file."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from prefect import flow, get_client, get_run_logger
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from flows.artifacts import RunProgress, publish_files
from flows.interrupted import deliver_after_cancellation, deliver_after_crash
from flows.room_roster import read_roster
from flows.run_log_fields import install_run_fields
from flows.runs import publish_result, stop_requested
from recorder.media.transcode import TranscodeReport
from recorder.outcome import StepFailure, file_entries
from recorder.recording import RECONNECTING_FILE, Recording
from recorder.recovery import forget_report, mark_reported, save_result, write_run_record
from recorder.request import CosLocation, RecordingRequest
from recorder.result import FileEntry, ResultDocument
from recorder.room_events import RoomRoster
from recorder.room_watch import RoomWatcher
from recorder.rooms import open_room
from recorder.rooms.trtc import RELAYS_FILE, TrtcRoom
from recorder.run_summary import (
    FilePreviews,
    FileRow,
    TakeProgress,
    file_rows,
    summary_markdown,
    take_progress,
)
from recorder.sealing import unseal_secrets
from recorder.settings import RecorderSettings
from recorder.storage import STORAGE_LABELS, StorageError
from recorder.stored_journal import StoredJournal
from recorder.workspace import Take, Workspace
from tasks.callback import send_callback
from tasks.cleanup import cleanup
from tasks.join import join
from tasks.previews import make_previews
from tasks.record import record
from tasks.relays import release_relays
from tasks.session import RoomSession
from tasks.transcode import transcode_recording
from tasks.upload import upload

T = TypeVar("T")
install_run_fields()
STOPPED_ON_REQUEST = "stopped on request"
TERMINATED = "the recording process was told to stop (SIGTERM)"
TRTC_IDLE_FALLBACK_SECONDS = 10


@dataclass
class AnchorPipeline:
    take: Take
    recorded: PrefectFuture[Recording]
    converted: PrefectFuture[list[TranscodeReport]]
    stored: PrefectFuture[list[str]]
    storage_label: str
    folder: Path
    previews: PrefectFuture[list[FilePreviews]] | None

    def rows(self, mode: str) -> list[FileRow]:
        """This take's rows in the run's table of files."""
        converted = _outcome(self.converted)
        previews: list[FilePreviews] | None = None
        if self.previews is not None:
            made = _outcome(self.previews)
            if isinstance(made, StepFailure):
                failed = FilePreviews(problems=[f"previews failed: {made.reason}"])
                previews = [failed] * len(self.entries())
            else:
                previews = made
        return file_rows(mode, self.entries(), converted if isinstance(converted, list) else None, previews)

    def waited_for(self) -> PrefectFuture[Any]:
        """The last step of this take before the callback."""
        return self.previews if self.previews is not None else self.stored

    def entries(self) -> list[FileEntry]:
        recorded = _outcome(self.recorded)
        converted = _outcome(self.converted)
        stored = _outcome(self.stored)
        return file_entries(
            self.take.anchor,
            recorded,
            converted,
            stored,
            self.storage_label,
            stored_before=StoredJournal(self.folder).urls(),
        )


def _outcome(future: PrefectFuture[T]) -> T | StepFailure | None:
    """The step's value, why it failed, or None if it never ran (an earlier step failed)."""
    state = future.state
    if state.is_completed():
        return state.result()
    if state.is_failed() or state.is_crashed():
        error = state.result(raise_on_failure=False)
        return StepFailure(
            str(error) if isinstance(error, BaseException) else state.message or state.type.value
        )
    return None


def _start(
    session: RoomSession, take: Take, location: CosLocation, settings: RecorderSettings
) -> AnchorPipeline:
    recorded = record.submit(session, take, location)
    # Futures as arguments: Prefect waits for them and passes their values (its type hints
    # do not say so).
    converted = transcode_recording.submit(session, recorded)  # type: ignore[call-overload]
    uploading = upload.with_options(
        retries=settings.upload_attempts - 1,
        retry_delay_seconds=exponential_backoff(settings.upload_backoff_seconds),
        retry_jitter_factor=0.2,
    )
    stored = uploading.submit(session, take, converted, location)
    folder = Workspace(session.run_dir).folder(take)
    # Previews come from the segments, so they are made before the cleanup removes them.
    previews = (
        make_previews.submit(session, take, converted, stored, location)  # type: ignore[call-overload]
        if settings.previews
        else None
    )
    return AnchorPipeline(take, recorded, converted, stored, session.storage_label, folder, previews)


def _watch_room(
    request: RecordingRequest,
    session: RoomSession,
    workspace: Workspace,
    settings: RecorderSettings,
    max_seconds: int | None,
    progress: RunProgress,
) -> tuple[dict[str, AnchorPipeline], dict[str, str], str]:
    """Start a pipeline for every anchor who publishes, until the room is over for us; the
    pipelines, the anchors that could not be recorded with why, and why it ended."""
    logger = get_run_logger(room=session.room)
    room = open_room(
        settings,
        session.sdk_app_id,
        session.room,
        request=request,
        relay_journal=session.run_dir / RELAYS_FILE,
    )
    idle = request.MaxIdleTime
    if isinstance(room, TrtcRoom):
        # TRTC's robots wait MaxIdleTime too, then the emptied room is dismissed and the
        # callback says so; the run's own idle rule is the fallback when no callback comes.
        idle += TRTC_IDLE_FALLBACK_SECONDS
    watcher = RoomWatcher(room, idle, anchors=request.Anchors)
    pipelines: dict[str, AnchorPipeline] = {}
    refused: dict[str, str] = {}  # anchors whose recording could not start, and why
    ended: set[str] = set()  # takes whose recording ended (told to the watcher once)
    with _RunSignals(request if isinstance(room, TrtcRoom) else None) as signals:
        watch_started = time.monotonic()
        deadline = watch_started + max_seconds if max_seconds else None
        while True:
            roster = signals.roster()
            if roster is not None and isinstance(room, TrtcRoom):
                room.update_roster(roster)
            waiting = {
                p.take.anchor
                for name, p in pipelines.items()
                if name not in ended and (workspace.folder(p.take) / RECONNECTING_FILE).exists()
            }
            step = watcher.step(waiting)
            if step.stop_reason is None:
                if signals.shutdown_requested():
                    step.stop_reason = TERMINATED
                elif signals.stop_requested():
                    step.stop_reason = STOPPED_ON_REQUEST
                elif deadline is not None and time.monotonic() >= deadline:
                    step.stop_reason = f"the scheduled {max_seconds} s ended"
                if step.stop_reason is not None:
                    # The recordings end now too: each record task looks for the workspace's stop.
                    workspace.request_stop(step.stop_reason)
                    step.start = []
            for anchor in step.start:
                take = Take(anchor=anchor, started_at=datetime.now(UTC), stream_url=room.stream_url(anchor))
                try:
                    workspace.add(take)
                except OSError as exc:
                    # A full work folder: this anchor's recording cannot start (the watcher
                    # counts it as running, so it is not tried again); the others go on.
                    refused[anchor] = (
                        f"recording failed: the work folder cannot hold it: {exc.strerror or exc}"
                    )
                    logger.error("anchor %s: %s", anchor, refused[anchor])
                    continue
                pipelines[take.name] = _start(session, take, request.CosConfig, settings)
                logger.info("anchor %s is publishing: recording started", anchor)
            for name, pipeline in pipelines.items():
                if name not in ended and pipeline.recorded.state.is_final():
                    ended.add(name)
                    watcher.finished(pipeline.take.anchor)
            if step.stop_reason:
                try:
                    # Recordings still running (one waiting for its stream to come back, one
                    # whose anchor is still on air) end now: each record task looks for this.
                    workspace.request_stop(step.stop_reason)
                    workspace.close(step.stop_reason)
                except OSError as exc:  # a full disk: a retried run would watch the room again
                    logger.error("could not note that the room is over: %s", exc)
                logger.info("recording ends: %s", step.stop_reason)
                failures = room.failures() if isinstance(room, TrtcRoom) else {}
                return pipelines, {**refused, **failures}, step.stop_reason
            progress.update(time.monotonic() - watch_started, _progress(pipelines, ended))
            time.sleep(settings.poll_seconds)


def _progress(pipelines: dict[str, AnchorPipeline], ended: set[str] | None = None) -> list[TakeProgress]:
    """Each take's time and bytes so far, from its folder (`ended`: takes whose recording
    is over; None: all of them)."""
    return [
        take_progress(p.take, p.folder, ended is None or name in ended)
        for name, p in sorted(pipelines.items(), key=lambda item: (item[1].take.started_at, item[0]))
    ]


class _RunSignals:
    """What reaches a running run from outside, asked at most once a second: has someone
    asked it to stop (the gateway's POST /recordings/{id}/stop tags the flow run), and what
    TRTC's room callbacks said about the room (a roster the gateway keeps in a Variable)."""

    def __init__(self, roster_of: RecordingRequest | None) -> None:
        run_id = flow_run.get_id()
        self._run_id = UUID(run_id) if run_id else None
        self._roster_of = roster_of
        self._next_stop_look = 0.0
        self._next_roster_look = 0.0
        # One client for the whole watch, not one per look (an hour is 3600 looks).
        self._client = get_client(sync_client=True)

    def __enter__(self) -> _RunSignals:
        self._client.__enter__()
        # A machine or worker shutting down sends SIGTERM first: the recordings then end as
        # on a stop request and go through the whole pipeline before the process exits.
        # Only while the room is watched; afterwards Prefect's own handling is back.
        self.terminated = False
        self._previous_sigterm: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._client.__exit__(None, None, None)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.terminated = True

    def shutdown_requested(self) -> bool:
        """SIGTERM came, and not as a cancellation (a worker cancels a run by setting it
        Cancelling, then sending SIGTERM): then Prefect's own handling runs, as before."""
        if not self.terminated:
            return False
        if self._run_id is not None:
            try:
                state = self._client.read_flow_run(self._run_id).state
            except Exception:  # the API is away: a shutdown is the likelier reading
                state = None
            if state is not None and state.is_cancelling():
                self.terminated = False
                if callable(self._previous_sigterm):
                    self._previous_sigterm(signal.SIGTERM, None)  # raises Prefect's TerminationSignal
        return self.terminated

    def stop_requested(self) -> bool:
        if self._run_id is None or time.monotonic() < self._next_stop_look:
            return False
        self._next_stop_look = time.monotonic() + 1.0
        try:
            return stop_requested(self._client, self._run_id)
        # A blip of the API must not end an hours-long recording: ask again next second.
        except Exception as exc:
            get_run_logger().warning("could not check for a stop request: %s", exc)
            return False

    def roster(self) -> RoomRoster | None:
        """The room's roster, when it is time to look again; None otherwise."""
        request = self._roster_of
        if request is None or time.monotonic() < self._next_roster_look:
            return None
        self._next_roster_look = time.monotonic() + 1.0
        try:
            return read_roster(self._client, request.SdkAppId, request.room_id)
        except Exception as exc:
            get_run_logger().warning("could not read the room's callbacks: %s", exc)
            return None


@flow(name="record-room", on_cancellation=[deliver_after_cancellation], on_crashed=[deliver_after_crash])
def record_room(
    request: RecordingRequest, sealed_secrets: str | None = None, max_seconds: int | None = None
) -> ResultDocument | State[ResultDocument]:
    """Record every anchor of the request's room into its own file and report the result.

    Runs started by the gateway carry the request's secrets in `sealed_secrets` (the
    `request` parameter holds "**********" in their place); they are opened here.
    `max_seconds` ends the recording that long after it started (a scheduled class)."""
    logger = get_run_logger(room=request.room)
    settings = RecorderSettings()
    if sealed_secrets is not None:
        request = unseal_secrets(request, sealed_secrets, settings.service_key)
    run_dir = (settings.work_root / (flow_run.get_id() or uuid.uuid4().hex)).resolve()
    joined = join(request, run_dir, return_state=True)
    if not joined.is_completed():
        error = joined.result(raise_on_failure=False)
        if isinstance(error, StorageError):
            return _storage_refused(request, settings, error)
        raise error if isinstance(error, BaseException) else RuntimeError(joined.message)
    session = joined.result()
    workspace = Workspace(run_dir)
    # Who records this run, and what: `recover-recordings` finishes it from disk if this
    # process dies. A new attempt of the run reports anew.
    write_run_record(run_dir, flow_run.get_id() or run_dir.name, request, sealed_secrets)
    forget_report(run_dir)

    failures: dict[str, str] = {}
    started_at = datetime.now(UTC)
    progress = RunProgress(request.room, max_seconds)
    try:
        stop_reason = workspace.closed_reason()
        if stop_reason is None:
            pipelines, failures, stop_reason = _watch_room(
                request, session, workspace, settings, max_seconds, progress
            )
        else:
            # A retried run: the room ended before; deliver the takes the journal lists.
            logger.info("room closed earlier (%s): finishing its recordings", stop_reason)
            pipelines = {}
    finally:
        # The relays end with the watch, also when it failed: the recordings are on disk.
        if session.backend == "trtc":
            release_relays(session, return_state=True)
    for take in workspace.takes():
        if take.name not in pipelines:
            pipelines[take.name] = _start(session, take, request.CosConfig, settings)
    ordered = sorted(pipelines.values(), key=lambda p: (p.take.started_at, p.take.anchor))
    progress.update(
        (datetime.now(UTC) - started_at).total_seconds(),
        _progress(pipelines),
        phase="converting and storing",
        now=True,
    )
    wait([p.stored for p in ordered])

    recorded = {p.take.anchor for p in ordered}
    refused = [
        FileEntry(UserId=anchor, RecordFile="", Status=0, Message=message)
        for anchor, message in sorted(failures.items())
        if anchor not in recorded
    ]
    document = ResultDocument.for_request(request, [e for p in ordered for e in p.entries()] + refused)
    problems = [f"{f.UserId}: {f.Message}" for f in document.failed]
    undelivered = _report(request, document)
    problems += undelivered
    delivered = not undelivered
    if delivered:
        mark_reported(run_dir, "the run reported its result")
    else:
        save_result(run_dir, document)  # for `recover`: the stored takes leave the work folder
    # Previews are for people, not for the callback: it does not wait for them, but the
    # cleanup does (they are made from the segments).
    wait([p.waited_for() for p in ordered])
    _publish_artifacts(request, session, started_at, stop_reason, ordered, refused, progress)
    stored = [p.take for p in ordered if p.stored.state.is_completed()]
    cleanup(session, stored, delivered)

    if problems:
        return Failed(message="; ".join(problems), data=document)
    return document


def _publish_artifacts(
    request: RecordingRequest,
    session: RoomSession,
    started_at: datetime,
    stop_reason: str,
    ordered: list[AnchorPipeline],
    refused: list[FileEntry],
    progress: RunProgress,
) -> None:
    rows = [row for p in ordered for row in p.rows(request.Mode)]
    rows += file_rows(request.Mode, refused, None, None)
    progress.done(
        (datetime.now(UTC) - started_at).total_seconds(), _progress({p.take.name: p for p in ordered})
    )
    summary = summary_markdown(
        request, session.storage_label, started_at, datetime.now(UTC), stop_reason, rows
    )
    try:
        publish_files(rows, summary)
    except Exception as exc:  # the files are delivered; a table for the UI is not worth failing for
        get_run_logger(room=request.room).warning("could not publish the run's artifacts: %s", exc)


def _storage_refused(
    request: RecordingRequest, settings: RecorderSettings, error: StorageError
) -> State[ResultDocument]:
    """The storage check failed before anything was recorded: each anchor on air now gets
    Status 0 with the reason, and the callback says so at once rather than after the room."""
    message = f"write to {STORAGE_LABELS[settings.storage]} failed: {error}; nothing was recorded"
    try:
        if settings.room_backend == "trtc":
            # Asking a TRTC room who publishes would start relays: the request and the room
            # callbacks know who is there.
            with get_client(sync_client=True) as client:
                roster = read_roster(client, request.SdkAppId, request.room_id)
            anchors = sorted(request.Anchors or roster.anchors)
        else:
            room = open_room(settings, request.SdkAppId, request.room)
            anchors = sorted(room.publishers())
    except Exception:  # the room is beside the point here: report the storage failure anyway
        anchors = []
    files = [FileEntry(UserId=anchor, RecordFile="", Status=0, Message=message) for anchor in anchors]
    document = ResultDocument.for_request(request, files)
    problems = [message, *_report(request, document)]
    get_run_logger(room=request.room).error("%s", message)
    return Failed(message="; ".join(problems), data=document)


def _report(request: RecordingRequest, document: ResultDocument) -> list[str]:
    """Publish the result document on the run and POST it to Callback; what went wrong."""
    run_id = flow_run.get_id()
    if run_id:
        with get_client(sync_client=True) as client:
            publish_result(client, UUID(run_id), document)
    if request.Callback is None:
        return []
    callback = send_callback(str(request.Callback), document, return_state=True)
    if callback.is_completed():
        return []
    return [str(callback.result(raise_on_failure=False))]


def run_request(request: RecordingRequest) -> tuple[ResultDocument, State[Any]]:
    """Run the flow here and now; the document is there whether or not a step failed."""
    state = record_room(request, return_state=True)
    document = state.result(raise_on_failure=False)
    if not isinstance(document, ResultDocument):
        raise RuntimeError(f"the recording run ended without a result: {document}")
    return document, state


__all__ = ["record_room", "run_request"]
