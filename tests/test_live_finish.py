"""LiveFinisher: a take converted (and stored to COS) while a real sim stream is recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.live_finish import LiveFinisher
from recorder.media.capture import CaptureReport, capture, segment_files
from recorder.media.transcode import TranscodeReport
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.storage.cos_live import CosLiveUpload
from tests.cos_endpoint import CosEndpoint
from tests.media_check import decode_to_end, ffprobe
from tests.test_storage_cos import BUCKET, REGION, SECRET_ID, SECRET_KEY, storage_for

SECONDS = 4.0
CODECS = {"00": {"audio": "mp3"}, "01": {"video": "h264"}, "02": {"video": "h264", "audio": "aac"}}


@pytest.fixture
def endpoint() -> Iterator[CosEndpoint]:
    with CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as running:
        yield running


class _Recorded:
    def __init__(self) -> None:
        self.report: TranscodeReport | None = None
        self.ended = 0.0  # time.monotonic() when the capture returned
        self.during: list[int] = []  # bytes of the recording converted, at each progress report


def _record(
    folder: Path,
    mode: str,
    upload: CosLiveUpload | None = None,
    seconds: float = SECONDS,
    size: tuple[int, int] = (320, 240),
    on_progress: object = None,
) -> tuple[_Recorded, LiveFinisher]:
    script = SimScript(anchors=[SimAnchor(user_id="a", leave=seconds, width=size[0], height=size[1])])
    destination = folder / ("a.mp3" if mode == "00" else "a.mp4")
    recorded = _Recorded()

    with SimRoom(1400000001, "live", script) as room:
        room.begin()
        if upload is None:
            live = LiveFinisher.to_folder(folder, mode, lambda index: destination)
        else:
            live = LiveFinisher.to_storage(folder, mode, lambda index: destination, lambda start: upload)

        def progress(report: CaptureReport) -> None:
            recorded.during.append(live.consumed)
            if callable(on_progress):
                on_progress()

        capture(room.stream_url("a"), folder, segment_seconds=1.0, read_timeout=10.0, on_progress=progress)
        recorded.ended = time.monotonic()
        reports = live.finish()
        recorded.report = reports[0] if reports else None
    return recorded, live


@pytest.mark.parametrize("mode", ["00", "01", "02"])
def test_the_file_is_made_while_recording_and_whole_when_the_stream_ends(tmp_path: Path, mode: str) -> None:
    recorded, live = _record(tmp_path, mode)

    assert recorded.report is not None, live.failure
    assert max(recorded.during) > 0  # converting went on while the stream was recorded
    path = recorded.report.path
    assert path.is_file() and not path.with_name(path.name + ".live.part").exists()
    probe = ffprobe(path)
    assert {kind: probe.codec(kind) for kind in probe.streams} == CODECS[mode]
    assert probe.duration == pytest.approx(SECONDS, abs=0.5)
    decoded = decode_to_end(path)
    assert all(seconds == pytest.approx(SECONDS, abs=0.5) for seconds in decoded.values()), decoded
    assert segment_files(tmp_path)  # the segments stay: they are the recording


def test_to_cos_the_parts_go_up_during_the_recording(endpoint: CosEndpoint, tmp_path: Path) -> None:
    storage = storage_for(endpoint, cos_part_size_mb=1)
    upload = storage.open_live("live/room/a.mp4", tmp_path)
    # 640x480 for 10 s is about 2.8 MB: the head part, one sent while recording, the last.
    recorded, live = _record(tmp_path, "02", upload, seconds=10.0, size=(640, 480))

    assert recorded.report is not None, live.failure
    assert recorded.report.stored_url.endswith("/live/room/a.mp4")
    early = [s for s in endpoint.seen if s.operation == "UploadPart" and s.at < recorded.ended]
    assert [s.status for s in early] == [200], endpoint.seen
    stored = endpoint.object("live/room/a.mp4")
    assert stored is not None and len(stored) > 2 * 1024 * 1024
    copy = tmp_path / "downloaded.mp4"
    copy.write_bytes(stored)
    assert {kind: ffprobe(copy).codec(kind) for kind in ("video", "audio")} == CODECS["02"]
    assert ffprobe(copy).duration == pytest.approx(10.0, abs=0.5)
    assert decode_to_end(copy)["video"] == pytest.approx(10.0, abs=0.5)
    assert endpoint.pending_uploads() == []
    assert not list(tmp_path.glob(".live-*"))  # no spool file left


def test_cos_going_away_while_recording_leaves_the_segments_to_the_ordinary_steps(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    storage = storage_for(endpoint, cos_part_size_mb=1, cos_request_retries=0, cos_timeout_seconds=1.0)
    upload = storage.open_live("live/room/a.mp4", tmp_path)
    recorded, live = _record(tmp_path, "02", upload, seconds=6.0, size=(640, 480), on_progress=endpoint.stop)

    assert recorded.report is None
    assert live.failure is not None and "COS" in live.failure, live.failure
    assert endpoint.keys() == []
    assert segment_files(tmp_path) and not list(tmp_path.glob(".live-*"))
    assert not (tmp_path / "a.mp4").exists()


def test_abort_stops_at_once_and_leaves_no_partial_file(tmp_path: Path) -> None:
    script = SimScript(anchors=[SimAnchor(user_id="a", leave=30.0)])
    with SimRoom(1400000001, "live", script) as room:
        room.begin()
        live = LiveFinisher.to_folder(tmp_path, "02", lambda index: tmp_path / "a.mp4")
        capture(room.stream_url("a"), tmp_path, segment_seconds=1.0, read_timeout=10.0, max_seconds=2.0)
        started = time.monotonic()
        live.abort()
        assert time.monotonic() - started < 5.0  # not waiting for a recording that goes on
    assert live.reports is None
    assert not list(tmp_path.glob("a.mp4*"))
