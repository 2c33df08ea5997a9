"""Deliver what a run recorded when its pipeline cannot: after a cancellation.

A cancelled flow run's process is stopped by its worker, mid-recording. The segments on
disk are whole up to that moment (every packet is flushed as it arrives), and the run's
journal lists its takes; this turns each into its file, stores it and makes its entry,
one take after another, without Prefect tasks (it runs after the run is over).
"""

from __future__ import annotations

from recorder.media.capture import segment_files
from recorder.media.transcode import EXTENSIONS, TranscodeReport, transcode
from recorder.outcome import StepFailure, file_entry
from recorder.recording import Recording
from recorder.request import RecordingRequest
from recorder.result import FileEntry
from recorder.settings import RecorderSettings
from recorder.storage import STORAGE_LABELS, Storage, StorageError, open_storage
from recorder.storage.keys import recording_key
from recorder.workspace import Take, Workspace


def deliver_takes(
    workspace: Workspace, request: RecordingRequest, settings: RecorderSettings, why: str
) -> list[FileEntry]:
    """One entry per take in the journal; a take that fails never stops the next one."""
    label = STORAGE_LABELS[settings.storage]
    storage: Storage | StepFailure
    try:
        storage = open_storage(settings, request.CosConfig)
    except StorageError as exc:
        storage = StepFailure(str(exc))
    entries = []
    for take in workspace.takes():
        entry = _deliver(workspace, take, request, storage, label, why)
        if entry.Status == 1 and not settings.keep_local_copy:
            workspace.discard(take)
        entries.append(entry)
    return entries


def _deliver(
    workspace: Workspace,
    take: Take,
    request: RecordingRequest,
    storage: Storage | StepFailure,
    label: str,
    why: str,
) -> FileEntry:
    folder = workspace.folder(take)
    segments = segment_files(folder)
    if not segments:
        return file_entry(take.anchor, StepFailure(f"nothing was recorded before {why}"), None, None, label)
    recording = Recording(take=take, folder=folder, streams=[], seconds=0.0, ended_because=why)
    extension = EXTENSIONS[request.Mode]
    converted: TranscodeReport | StepFailure
    try:
        converted = transcode(segments, request.Mode, folder / f"{take.name}.{extension}")
    # Whatever breaks one take (a codec, a full disk) is that take's Message, not the others'.
    except Exception as exc:
        converted = StepFailure(str(exc))
    stored: str | StepFailure | None = None
    if isinstance(converted, TranscodeReport):
        if isinstance(storage, StepFailure):
            stored = storage
        else:
            key = recording_key(request.CosConfig.Path, request.room, take.anchor, take.started_at, extension)
            try:
                stored = storage.store(converted.path, key)
            except Exception as exc:
                stored = StepFailure(str(exc))
    return file_entry(take.anchor, recording, converted, stored, label)
