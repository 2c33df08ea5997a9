from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from recorder.media.capture import SEGMENT_LIST, CaptureError, capture, segment_files
from recorder.media.segment_reader import SegmentReader
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from tests.conftest import RECORDED_SECONDS
from tests.media_check import decode_to_end, ffprobe


def test_capture_copies_the_stream_into_segments(recorded: dict[str, Path]) -> None:
    segments = segment_files(recorded["av"])
    assert len(segments) >= 2  # 3 s cut about every second, on keyframes
    listed = (recorded["av"] / SEGMENT_LIST).read_text().splitlines()
    assert [line.split(",")[0] for line in listed] == [s.name for s in segments]
    for segment in segments:
        probe = ffprobe(segment)
        assert probe.format_name == "mpegts"
        assert probe.codec("video") == "h264" and probe.codec("audio") == "aac"


def test_every_segment_starts_on_a_keyframe(recorded: dict[str, Path]) -> None:
    for segment in segment_files(recorded["av"]):
        with av.open(str(segment)) as container:
            first = next(container.demux(container.streams.video[0]))
            assert first.is_keyframe, segment.name


def test_segments_join_into_the_whole_recording(recorded: dict[str, Path]) -> None:
    with SegmentReader(segment_files(recorded["av"])) as reader, av.open(reader, format="mpegts") as joined:
        times: dict[str, list[float]] = {"video": [], "audio": []}
        decoding: dict[str, list[float]] = {"video": [], "audio": []}
        for packet in joined.demux():
            if packet.pts is not None:
                times[packet.stream.type].append(float(packet.pts * packet.time_base))
                decoding[packet.stream.type].append(float(packet.dts * packet.time_base))
    start = min(min(times["video"]), min(times["audio"]))
    assert max(times["video"]) - start == pytest.approx(RECORDED_SECONDS, abs=0.3)
    assert max(times["audio"]) - start == pytest.approx(RECORDED_SECONDS, abs=0.3)
    # Decoding timestamps only move forward, across segment boundaries too.
    for kind, dts in decoding.items():
        assert all(a < b for a, b in itertools.pairwise(dts)), kind


def test_nothing_to_pull_is_an_error(tmp_path: Path) -> None:
    script = SimScript(anchors=[SimAnchor(user_id="later", join=30.0, leave=40.0)])
    with SimRoom(1, "nothing", script) as room, pytest.raises(CaptureError, match="cannot open"):
        capture(room.stream_url("later"), tmp_path, segment_seconds=1, read_timeout=3)


def test_stop_request_ends_the_capture_early(tmp_path: Path) -> None:
    script = SimScript(anchors=[SimAnchor(user_id="long", leave=30.0)])
    deadline = time.monotonic() + 1.5
    with SimRoom(1, "stop", script) as room:
        report = capture(
            room.stream_url("long"),
            tmp_path,
            segment_seconds=1,
            read_timeout=5,
            should_stop=lambda: time.monotonic() > deadline,
        )
    assert report.ended_because == "stopped"
    assert report.seconds < 3.0
    assert decode_to_end(segment_files(tmp_path)[-1])


def test_a_killed_recorder_leaves_a_playable_recording(tmp_path: Path) -> None:
    """kill -9 in the middle of a segment: everything on disk still plays, up to the kill."""
    script = SimScript(anchors=[SimAnchor(user_id="a", leave=30.0)])
    code = (
        "import sys; from pathlib import Path; from recorder.media.capture import capture; "
        "capture(sys.argv[1], Path(sys.argv[2]), segment_seconds=2, read_timeout=5)"
    )
    with SimRoom(1, "crash", script) as room:
        url = room.stream_url("a")
        child = subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path)])
        try:
            time.sleep(4.5)
            published = room.elapsed()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    segments = segment_files(tmp_path)
    assert len(segments) >= 2  # one finished segment, one cut off mid-way
    with av.open(str(segments[0])) as first:
        start = float(first.start_time) / av.time_base
    reached = 0.0
    for segment in segments:  # each piece decodes on its own, the cut-off one included
        reached = max(reached, *decode_to_end(segment).values())
    # All but the last moments before the kill are on disk (the child needed a moment to start).
    assert reached - start >= published - 1.5
    with SegmentReader(segments) as reader, av.open(reader, format="mpegts") as joined:
        assert sum(1 for _ in joined.decode(video=0)) > 0


def test_maximum_duration_ends_the_capture(tmp_path: Path) -> None:
    script = SimScript(anchors=[SimAnchor(user_id="long", leave=30.0)])
    with SimRoom(1, "max", script) as room:
        report = capture(
            room.stream_url("long"), tmp_path, segment_seconds=1, read_timeout=5, max_seconds=1.5
        )
    assert report.ended_because == "maximum duration reached"
    assert report.seconds == pytest.approx(1.5, abs=0.2)


def test_a_failed_stream_is_reported_without_its_url(tmp_path: Path) -> None:
    # The URL may carry a per-anchor stream key; Messages and logs must not repeat it.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    secret_url = f"rtmp://127.0.0.1:{port}/live/1400000000_1_anchor_SECRETKEY123"
    with pytest.raises(CaptureError) as caught:
        capture(secret_url, tmp_path / "out", segment_seconds=1.0, read_timeout=3.0)
    assert str(caught.value).startswith("cannot open the stream: ")
    assert "SECRETKEY123" not in str(caught.value)
