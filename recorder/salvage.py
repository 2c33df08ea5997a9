"""Deliver what a run recorded when its pipeline cannot: after a cancellation.

A cancelled flow run's process is stopped by its worker, mid-recording. The segments on
disk are whole up to that moment (every packet is flushed as it arrives), and the run's
journal lists its takes; this turns each into its file, stores it and makes its entry,
one take after another, without Prefect tasks (it runs after the run is over).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from recorder.media.capture import segment_files
from recorder.media.transcode import EXTENSIONS, TranscodeReport, transcode_pieces
from recorder.outcome import StepFailure, file_entries
from recorder.recording import Recording
from recorder.request import RecordingRequest
from recorder.result import FileEntry
from recorder.settings import RecorderSettings
from recorder.storage import STORAGE_LABELS, Storage, StorageError, open_storage
from recorder.storage.keys import recording_key
from recorder.stored_journal import StoredJournal
from recorder.workspace import Take, Workspace


@dataclass
class DeliveredTake:
    """What became of one take: its entries, and the files it made (None: none were made)."""

    entries: list[FileEntry]
    reports: list[TranscodeReport] | None


def deliver_takes(
    workspace: Workspace, request: RecordingRequest, settings: RecorderSettings, why: str
) -> list[FileEntry]:
    """The entries of the takes in the journal (one per file: a take cut into pieces makes
    several); a take that fails never stops the next one."""
    return [entry for take in salvage_takes(workspace, request, settings, why) for entry in take.entries]


def salvage_takes(
    workspace: Workspace, request: RecordingRequest, settings: RecorderSettings, why: str
) -> list[DeliveredTake]:
    """Each take of the journal converted, stored and summed up, in the journal's order."""
    label = STORAGE_LABELS[settings.storage]
    storage: Storage | StepFailure
    try:
        storage = open_storage(settings, request.CosConfig)
    except StorageError as exc:
        storage = StepFailure(str(exc))
    delivered = []
    for take in workspace.takes():
        made = _deliver(workspace, take, request, settings, storage, label, why)
        if all(entry.Status == 1 for entry in made.entries) and not settings.keep_local_copy:
            workspace.discard(take)
        delivered.append(made)
    return delivered


def _deliver(
    workspace: Workspace,
    take: Take,
    request: RecordingRequest,
    settings: RecorderSettings,
    storage: Storage | StepFailure,
    label: str,
    why: str,
) -> DeliveredTake:
    folder = workspace.folder(take)
    segments = segment_files(folder)
    if not segments:
        failure = StepFailure(f"nothing was recorded before {why}")
        return DeliveredTake(file_entries(take.anchor, failure, None, None, label), None)
    recording = Recording(take=take, folder=folder, streams=[], seconds=0.0, ended_because=why)
    extension = EXTENSIONS[request.Mode]
    limit = request.MaxMediaFileDuration * 60 if request.MaxMediaFileDuration else settings.max_file_seconds
    converted: list[TranscodeReport] | StepFailure
    try:
        converted = transcode_pieces(segments, request.Mode, folder / f"{take.name}.{extension}", limit)
    # Whatever breaks one take (a codec, a full disk) is that take's Message, not the others'.
    except Exception as exc:
        converted = StepFailure(str(exc))
    journal = StoredJournal(folder)
    stored: list[str] | StepFailure | None = None
    if isinstance(converted, list):
        if isinstance(storage, StepFailure):
            stored = storage
        else:
            try:
                stored = [_store(storage, request, take, report, journal) for report in converted]
            except Exception as exc:
                stored = StepFailure(str(exc))
    entries = file_entries(take.anchor, recording, converted, stored, label, stored_before=journal.urls())
    return DeliveredTake(entries, converted if isinstance(converted, list) else None)


def _store(
    storage: Storage, request: RecordingRequest, take: Take, report: TranscodeReport, journal: StoredJournal
) -> str:
    """Store one file, unless it was stored before the run was interrupted (while recording,
    or by its upload step): the same segments make the same file, which is not stored twice."""
    url = journal.urls().get(report.path.name)
    if url:
        return url
    started = take.started_at + timedelta(seconds=report.start_seconds)
    extension = report.path.suffix.lstrip(".")
    key = recording_key(request.CosConfig.Path, request.room, take.anchor, started, extension)
    url = storage.store(report.path, key)
    journal.add(report.path.name, url)
    return url
