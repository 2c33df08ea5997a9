"""One anchor's journey through the steps, summed up as its entry in the result document."""

from __future__ import annotations

from dataclasses import dataclass

from recorder.media.transcode import TranscodeReport
from recorder.recording import Recording
from recorder.result import FileEntry


@dataclass
class StepFailure:
    """A step that did not complete, and why (the exception's message, no traceback)."""

    reason: str


def file_entry(
    anchor: str,
    recorded: Recording | StepFailure | None,
    converted: TranscodeReport | StepFailure | None,
    stored: str | StepFailure | None,
    storage_label: str = "storage",
) -> FileEntry:
    """The first failed step decides the Message; later steps never ran for this anchor."""
    if not isinstance(recorded, Recording):
        reason = recorded.reason if recorded else "not run"
        return FileEntry(UserId=anchor, RecordFile="", Status=0, Message=f"recording failed: {reason}")
    kept = f" (media kept in {recorded.folder})"
    if not isinstance(converted, TranscodeReport):
        reason = converted.reason if converted else "not run"
        return FileEntry(
            UserId=anchor, RecordFile="", Status=0, Message=f"transcoding failed: {reason}{kept}"
        )
    if not isinstance(stored, str):
        reason = stored.reason if stored else "not run"
        return FileEntry(
            UserId=anchor, RecordFile="", Status=0, Message=f"write to {storage_label} failed: {reason}{kept}"
        )
    message = f"ok: {converted.seconds:.1f} s, {', '.join(converted.streams)}; {recorded.ended_because}"
    if converted.note:
        message += f"; {converted.note}"
    return FileEntry(UserId=anchor, RecordFile=stored, Status=1, Message=message)
