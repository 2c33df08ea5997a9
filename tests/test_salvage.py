"""Salvage: a run's takes turned into stored files without Prefect (after a cancellation)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from recorder.media.capture import segment_files
from recorder.request import RecordingRequest, parse_request
from recorder.result import FileEntry
from recorder.salvage import deliver_takes
from recorder.settings import RecorderSettings
from recorder.stored_journal import StoredJournal
from recorder.workspace import Take, Workspace
from tests.conftest import RECORDED_SECONDS
from tests.media_check import decode_to_end, ffprobe

WHY = "the run was cancelled"
T0 = datetime(2026, 3, 4, 10, 20, 30, 123456, tzinfo=UTC)
EXPECTED = {
    "00": ("mp3", {"audio": "mp3"}),
    "02": ("mp4", {"video": "h264", "audio": "aac"}),
}


def _request(mode: str) -> RecordingRequest:
    return parse_request(
        {
            "SdkAppId": 1400000000,
            "RoomId": 5150,
            "UserId": "recorder_1",
            "UserSig": "sig-salvage",
            "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789", "Path": "/trtc"},
            "Mode": mode,
        }
    )


def _settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(storage_dir=tmp_path / "recordings")


def _workspace(tmp_path: Path, takes: dict[str, Path | None]) -> tuple[Workspace, list[Take]]:
    """A run folder with one take per entry: the named anchor with a copy of the given
    recording's segments (None: a take whose recording never wrote anything)."""
    workspace = Workspace(tmp_path / "work" / "run-1")
    made: list[Take] = []
    for n, (anchor, source) in enumerate(takes.items()):
        take = Take(
            anchor=anchor,
            started_at=T0 + timedelta(seconds=n),
            stream_url=f"http://127.0.0.1:1/live/{anchor}.flv",
        )
        folder = workspace.add(take)
        if source is not None:
            segments = segment_files(source)
            assert segments, source
            for segment in segments:
                shutil.copy2(segment, folder / segment.name)
        made.append(take)
    return workspace, made


def _path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


def _kept(entry: FileEntry) -> Path:
    assert "(media kept in " in entry.Message, entry.Message
    return Path(entry.Message.split("(media kept in ")[1].removesuffix(")"))


def _assert_stored(
    entry: FileEntry, take: Take, storage: Path, extension: str, codecs: dict[str, str], workspace: Workspace
) -> None:
    assert (entry.UserId, entry.Status) == (take.anchor, 1), entry.Message
    assert entry.Message.startswith("ok: "), entry.Message
    assert WHY in entry.Message
    path = _path(entry.RecordFile)
    assert path.is_file()
    assert path.parent == (storage / "trtc" / "5150").resolve()
    assert path.name.startswith(f"{take.anchor}_") and path.suffix == f".{extension}"
    probe = ffprobe(path)
    assert {kind: str(s["codec_name"]) for kind, s in probe.streams.items()} == codecs
    assert probe.duration == pytest.approx(RECORDED_SECONDS, abs=0.5)
    reached = decode_to_end(path)
    assert set(reached) == set(codecs)
    for seconds in reached.values():
        assert seconds == pytest.approx(RECORDED_SECONDS, abs=0.5)
    # Stored: the take's media is gone from the work folder.
    assert not workspace.folder(take).exists()


@pytest.mark.parametrize("mode", ["02", "00"])
def test_each_take_becomes_a_stored_playable_file(
    recorded: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    workspace, takes = _workspace(tmp_path, {"teacher": recorded["av"], "student_1": recorded["audio"]})
    settings = _settings(tmp_path)

    entries = deliver_takes(workspace, _request(mode), settings, WHY)

    extension, codecs = EXPECTED[mode]
    # One entry per take, in the order the takes started.
    assert [e.UserId for e in entries] == ["teacher", "student_1"]
    teacher, student = entries
    _assert_stored(teacher, takes[0], settings.storage_dir, extension, codecs, workspace)
    assert teacher.Message.endswith(f"; {WHY}")
    if mode == "02":
        # The camera was off: an audio-only MP4, and the Message says so after the reason.
        _assert_stored(student, takes[1], settings.storage_dir, "mp4", {"audio": "aac"}, workspace)
        assert student.Message.endswith(f"; {WHY}; the anchor published no video")
    else:
        _assert_stored(student, takes[1], settings.storage_dir, extension, codecs, workspace)
        assert student.Message.endswith(f"; {WHY}")
    # Every take is delivered: the journal lists none, and the run folder can go.
    assert workspace.takes() == []
    assert workspace.discard_if_done()
    assert not workspace.root.exists()


def test_a_take_with_no_segments_failed_to_record(recorded: dict[str, Path], tmp_path: Path) -> None:
    workspace, takes = _workspace(tmp_path, {"early": None, "teacher": recorded["av"]})
    settings = _settings(tmp_path)

    empty, teacher = deliver_takes(workspace, _request("02"), settings, WHY)

    assert (empty.UserId, empty.Status, empty.RecordFile) == ("early", 0, "")
    assert empty.Message == f"recording failed: nothing was recorded before {WHY}"
    # Its journal entry stays (nothing was delivered for it).
    assert workspace.folder(takes[0]).is_dir()
    assert [t.anchor for t in workspace.takes()] == ["early"]
    # The take after it is delivered all the same.
    _assert_stored(teacher, takes[1], settings.storage_dir, "mp4", EXPECTED["02"][1], workspace)


def test_a_failed_transcode_keeps_that_take_and_delivers_the_others(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    workspace, takes = _workspace(
        tmp_path, {"camera_on": recorded["av"], "camera_off": recorded["audio"], "muted": recorded["video"]}
    )
    settings = _settings(tmp_path)

    on, off, muted = deliver_takes(workspace, _request("01"), settings, WHY)

    _assert_stored(on, takes[0], settings.storage_dir, "mp4", {"video": "h264"}, workspace)
    _assert_stored(muted, takes[2], settings.storage_dir, "mp4", {"video": "h264"}, workspace)
    assert (off.UserId, off.Status, off.RecordFile) == ("camera_off", 0, "")
    assert off.Message.startswith(
        "transcoding failed: Mode 01 (video) needs video but the anchor published audio"
    )
    # The media is kept, whole, where the Message says.
    kept = _kept(off)
    assert kept == workspace.folder(takes[1])
    segments = segment_files(kept)
    assert [s.name for s in segments] == [s.name for s in segment_files(recorded["audio"])]
    assert decode_to_end(segments[0])["audio"] > 0
    assert not list(kept.glob("*.part"))
    assert [t.anchor for t in workspace.takes()] == ["camera_off"]
    assert not workspace.discard_if_done()


def test_storage_that_cannot_be_written_keeps_every_take(recorded: dict[str, Path], tmp_path: Path) -> None:
    workspace, takes = _workspace(tmp_path, {"teacher": recorded["av"], "student_1": recorded["audio"]})
    settings = _settings(tmp_path)
    settings.storage_dir.write_text("a file where the storage folder should be")

    entries = deliver_takes(workspace, _request("02"), settings, WHY)

    assert [(e.UserId, e.Status, e.RecordFile) for e in entries] == [("teacher", 0, ""), ("student_1", 0, "")]
    for entry, take in zip(entries, takes, strict=True):
        assert entry.Message.startswith("write to local storage failed: "), entry.Message
        kept = _kept(entry)
        assert kept == workspace.folder(take)
        assert segment_files(kept)
        # The converted file is there too, whole: nothing needs converting again.
        converted = kept / f"{take.name}.mp4"
        assert ffprobe(converted).duration == pytest.approx(RECORDED_SECONDS, abs=0.5)
    assert settings.storage_dir.read_text() == "a file where the storage folder should be"
    assert [t.anchor for t in workspace.takes()] == ["teacher", "student_1"]


def test_no_takes_no_entries(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "work" / "run-1")
    assert deliver_takes(workspace, _request("02"), _settings(tmp_path), WHY) == []


def test_a_file_stored_before_the_interruption_is_not_stored_again(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    # The live conversion stored the take's file, then the run was interrupted: delivering
    # from disk reports that file, and no second copy (`-1`) appears in storage.
    workspace, [take] = _workspace(tmp_path, {"teacher": recorded["av"]})
    settings = _settings(tmp_path)
    earlier = tmp_path / "recordings" / "trtc" / "5150" / "teacher_stored_while_recording.mp4"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"stored while recording")
    StoredJournal(workspace.folder(take)).add(f"{take.name}.mp4", earlier.as_uri())

    [entry] = deliver_takes(workspace, _request("02"), settings, WHY)

    assert (entry.Status, entry.RecordFile) == (1, earlier.as_uri())
    assert [p.name for p in earlier.parent.iterdir()] == [earlier.name]


def test_a_take_longer_than_the_request_limit_is_delivered_in_pieces(tmp_path: Path) -> None:
    from tests.test_transcode_pieces import _h264_aac_recording

    source = tmp_path / "source"
    _h264_aac_recording(source, 130.0)
    workspace, _ = _workspace(tmp_path, {"teacher": source})
    request = _request("02").model_copy(update={"MaxMediaFileDuration": 1})

    entries = deliver_takes(workspace, request, _settings(tmp_path), WHY)

    assert [(e.UserId, e.Status) for e in entries] == [("teacher", 1)] * 3
    durations = [ffprobe(_path(e.RecordFile)).duration for e in entries]
    assert durations == pytest.approx([60.0, 60.0, 10.0], abs=0.2)
