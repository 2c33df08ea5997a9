"""What users see of a real run: its artifacts in the Prefect API, previews beside each
file, and a recording cut into pieces, each its own entry."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import av
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Artifact
from prefect.logging.formatters import JsonFormatter

from flows.artifacts import FILES_TABLE_DESCRIPTION, SUMMARY_DESCRIPTION
from recorder.media.capture import segment_files
from recorder.media.transcode import transcode
from recorder.rooms.sim_script import SimAnchor, SimScript
from tests.conftest import Dirs
from tests.media_check import decode_to_end, ffprobe
from tests.prefect_records import assert_secrets_absent
from tests.test_flow import SECRET_KEY, USER_SIG, _path, _request, _run

TWO_ANCHORS = SimScript(
    anchors=[
        SimAnchor(user_id="teacher", join=0.0, leave=4.0, tone_hz=440, width=320, height=240),
        SimAnchor(user_id="student_1", join=0.5, leave=3.0, tone_hz=660, width=480, height=270),
    ]
)


def _artifacts(flow_run_id: UUID) -> list[Artifact]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def _one(artifacts: list[Artifact], description: str) -> Artifact:
    found = [a for a in artifacts if a.description == description]
    assert len(found) == 1, [(a.type, a.description) for a in artifacts]
    return found[0]


def _image(path: Path) -> tuple[str, int, int]:
    """An image's codec and size, as FFmpeg decodes it (not our code)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return container.streams.video[0].codec_context.name, frame.width, frame.height


def _video_frames(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return int(out.strip())


def test_a_run_shows_its_files_summary_and_progress_and_stores_previews(dirs: Dirs) -> None:
    document, state = _run(_request(None, Mode="02"), TWO_ANCHORS)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    artifacts = _artifacts(run_id)

    table = _one(artifacts, FILES_TABLE_DESCRIPTION)
    assert table.type == "table"
    # The API keeps a table's rows as JSON text.
    rows: list[dict[str, Any]] = json.loads(str(table.data))
    assert [r["anchor"] for r in rows] == [f.UserId for f in document.Files] == ["teacher", "student_1"]
    sizes = {"teacher": (320, 240), "student_1": (480, 270)}
    for row, entry in zip(rows, document.Files, strict=True):
        path = _path(entry.RecordFile)
        probe = ffprobe(path)
        # Each row says what the file is, checked against the file itself.
        assert (row["link"], row["status"], row["message"]) == (entry.RecordFile, 1, entry.Message)
        assert row["size_bytes"] == path.stat().st_size
        assert row["seconds"] == pytest.approx(probe.duration, abs=0.25)
        assert (
            row["codecs"] == f"video:{probe.codec('video')} (copied), audio:{probe.codec('audio')} (copied)"
        )
        width, height = sizes[row["anchor"]]
        assert row["resolution"] == f"{width}x{height}"
        assert row["mode"] == "02"
        # Previews beside the file, with its stem: a poster of the picture, the sound's shape.
        poster, wave = path.with_suffix(".jpg"), path.with_suffix(".png")
        assert row["previews"].split() == [poster.as_uri(), wave.as_uri()]
        assert _image(poster) == ("mjpeg", width, height)
        codec, wave_width, wave_height = _image(wave)
        assert codec == "png" and wave_width > wave_height > 0

    summary = _one(artifacts, SUMMARY_DESCRIPTION)
    assert summary.type == "markdown"
    text = str(summary.data)
    assert "RoomId 43474 of SdkAppId 1400000000" in text and "`recorder_1`" in text
    assert "| teacher | 1 |" in text and "| student_1 | 1 |" in text
    assert "Why it stopped:** no anchor in the room" in text, text
    assert "2 of 2 stored" in text

    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1
    assert progress[0].data == 100.0
    assert "files delivered" in str(progress[0].description)
    assert "| teacher |" in str(progress[0].description) and " MB |" in str(progress[0].description)

    assert_secrets_absent(run_id, [USER_SIG, SECRET_KEY], expect_in_logs="previews of")


def test_previews_can_be_switched_off(dirs: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_PREVIEWS", "false")
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=2.0)])
    document, state = _run(_request(None, Mode="00"), script)
    assert state.is_completed(), state.message
    stored = _path(document.Files[0].RecordFile)
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]


def test_a_recording_longer_than_the_limit_is_cut_into_consecutive_entries(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kept: the segments (to convert the same input whole, for comparison) and the pieces.
    monkeypatch.setenv("RECORDER_MAX_FILE_SECONDS", "10")
    monkeypatch.setenv("RECORDER_KEEP_LOCAL_COPY", "true")
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=25.0, fps=15)])
    document, state = _run(_request(None, Mode="02"), script)
    assert state.is_completed(), state.message

    assert [f.UserId for f in document.Files] == ["teacher"] * 3
    assert all(f.Status == 1 for f in document.Files)
    assert [f.Message.split("; ")[-1] for f in document.Files] == [
        "file 1 of 3 from 0.0 s",
        "file 2 of 3 from 10.0 s",
        "file 3 of 3 from 20.0 s",
    ]
    pieces = [_path(f.RecordFile) for f in document.Files]
    assert len(set(pieces)) == 3
    for piece, seconds in zip(pieces, [10.0, 10.0, 5.0], strict=True):
        probe = ffprobe(piece)
        assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
        assert probe.duration == pytest.approx(seconds, abs=0.6)
        assert decode_to_end(piece)["video"] == pytest.approx(probe.duration, abs=0.2)
        assert piece.with_suffix(".jpg").is_file()  # each piece has its own poster
    # Not a frame lost or doubled: the same recording converted whole has as many.
    folders = [p for p in dirs.work.rglob("*") if p.is_dir() and segment_files(p)]
    assert len(folders) == 1
    whole = transcode(segment_files(folders[0]), "02", dirs.work / "whole.mp4")
    assert sum(_video_frames(p) for p in pieces) == _video_frames(whole.path)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_every_log_line_of_a_run_carries_its_run_room_and_anchor(dirs: Dirs) -> None:
    # What Prefect's JSON formatter (PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER=json) writes
    # as fields: the records' attributes.
    captured = _Records()
    run_logs = [logging.getLogger("prefect.task_runs"), logging.getLogger("prefect.flow_runs")]
    for logger in run_logs:
        logger.addHandler(captured)
    try:
        script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=2.0)])
        _, state = _run(_request(None, Mode="00"), script)
    finally:
        for logger in run_logs:
            logger.removeHandler(captured)
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)

    # Every line of the run: its run id and room, Prefect's own lines too.
    assert len(captured.records) > 15
    for record in captured.records:
        assert getattr(record, "flow_run_id", None) == run_id, record.getMessage()
        assert getattr(record, "room", None) == "43474", record.getMessage()
    # Every line of a step of the anchor (theirs and Prefect's): the anchor and the task run.
    per_anchor = [r for r in captured.records if getattr(r, "task_run_name", "").endswith("-teacher")]
    steps = {r.task_run_name.split("-")[0] for r in per_anchor}  # type: ignore[attr-defined]
    assert {"record", "transcode", "upload", "previews"} <= steps, steps
    for record in per_anchor:
        assert getattr(record, "anchor", None) == "teacher", record.getMessage()
        assert getattr(record, "task_run_id", None)
    assert any(r.getMessage().startswith("Finished in state") for r in per_anchor)
    formatted = JsonFormatter("default", "", "%").format(per_anchor[0])
    assert {"anchor", "room", "flow_run_id", "task_run_id"} <= set(json.loads(formatted))
