"""A take's entries in the result: one per file it made, or one saying which step failed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from recorder.media.pieces import TranscodeReport
from recorder.outcome import StepFailure, file_entries
from recorder.recording import Recording
from recorder.workspace import Take

TAKE = Take(anchor="teacher", started_at=datetime(2026, 12, 1, tzinfo=UTC), stream_url="http://127.0.0.1:1/a")
RECORDED = Recording(
    take=TAKE, folder=Path("/work/run/teacher"), streams=[], seconds=25.0, ended_because="left"
)
PIECES = [
    TranscodeReport(Path(f"/work/run/teacher/{name}"), ["video:h264 (copied)"], seconds, start_seconds=start)
    for name, seconds, start in [("a.mp4", 10.0, 0.0), ("a_2.mp4", 10.0, 10.0), ("a_3.mp4", 5.0, 20.0)]
]


def test_each_piece_is_an_entry_that_says_where_it_starts() -> None:
    entries = file_entries("teacher", RECORDED, PIECES, ["u1", "u2", "u3"])
    assert [(e.RecordFile, e.Status) for e in entries] == [("u1", 1), ("u2", 1), ("u3", 1)]
    assert [e.Message.split("; ")[-1] for e in entries] == [
        "file 1 of 3 from 0.0 s",
        "file 2 of 3 from 10.0 s",
        "file 3 of 3 from 20.0 s",
    ]


def test_pieces_stored_before_a_failed_upload_keep_their_entries() -> None:
    failed = StepFailure("COS did not answer")
    entries = file_entries("teacher", RECORDED, PIECES, failed, "COS", stored_before={"a.mp4": "u1"})
    assert [(e.RecordFile, e.Status) for e in entries] == [("u1", 1), ("", 0), ("", 0)]
    assert all(e.Message.startswith("write to COS failed: COS did not answer") for e in entries[1:])


def test_a_failed_step_is_one_entry() -> None:
    [entry] = file_entries("teacher", RECORDED, StepFailure("no video"), None)
    assert (entry.Status, entry.Message.split(" (")[0]) == (0, "transcoding failed: no video")
    [entry] = file_entries("teacher", StepFailure("refused"), None, None)
    assert (entry.Status, entry.Message) == (0, "recording failed: refused")
