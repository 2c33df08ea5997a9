"""The issue's own check, through the whole pipeline: a 3-minute recording with a 1-minute
MaxMediaFileDuration gives 3 entries whose frames add up to the recording converted whole."""

from __future__ import annotations

import pytest

from recorder.media.capture import segment_files
from recorder.media.transcode import transcode
from recorder.rooms.sim_script import SimAnchor, SimScript
from tests.conftest import Dirs
from tests.media_check import ffprobe
from tests.test_flow import _path, _request, _run
from tests.test_transcode_pieces import _frames

pytestmark = pytest.mark.timeout(420)


def test_three_minutes_with_a_one_minute_limit_are_three_entries_with_every_frame(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The segments are kept, to convert the same input whole for the comparison.
    monkeypatch.setenv("RECORDER_KEEP_LOCAL_COPY", "true")
    script = SimScript(anchors=[SimAnchor(user_id="student_1", leave=180.0, width=160, height=120)])
    document, state = _run(_request(None, Mode="02", MaxMediaFileDuration=1), script)
    assert state.is_completed(), state.message

    assert [(f.UserId, f.Status) for f in document.Files] == [("student_1", 1)] * 3
    pieces = [_path(f.RecordFile) for f in document.Files]
    durations = [ffprobe(p).duration for p in pieces]
    assert durations[:2] == pytest.approx([60.0, 60.0], abs=1.0)
    assert sum(durations) == pytest.approx(180.0, abs=1.5)

    [folder] = [p for p in dirs.work.rglob("*") if p.is_dir() and segment_files(p)]
    whole = transcode(segment_files(folder), "02", dirs.work / "whole.mp4").path
    for kind in ("video", "audio"):
        assert sum(_frames(p, kind) for p in pieces) == _frames(whole, kind), kind
    print(f"3 entries of {[round(d, 2) for d in durations]} s; {_frames(whole, 'video')} video frames in all")
