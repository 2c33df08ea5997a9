"""A recording cut into files of at most a maximum duration: consecutive, nothing lost or doubled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from recorder.media.pieces import LocalPieces, Output
from recorder.media.segment_reader import SegmentReader
from recorder.media.transcode import TranscodeError, convert_pieces, transcode, transcode_pieces
from tests.media_check import decode_to_end, ffprobe

MINUTES_3 = 180.0


def _h264_aac_recording(folder: Path, seconds: float, gop: int = 50) -> list[Path]:
    """A small TRTC-like recording made fast: 160x90 H.264 at 25 fps (a keyframe every 2 s,
    B-frames on, as x264 makes them) and 48 kHz stereo AAC, cut into 20 s TS segments."""
    folder.mkdir()
    graph = (
        f"testsrc2=size=160x90:rate=25:duration={seconds}[out0];sine=f=440:r=48000:duration={seconds}[out1]"
    )
    whole = folder / "whole.ts"
    with av.open(graph, format="lavfi") as source, av.open(str(whole), "w", format="mpegts") as sink:
        keyframes = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2"
        video = sink.add_stream("libx264", rate=25, options={"preset": "ultrafast", "x264-params": keyframes})
        video.width, video.height, video.pix_fmt = 160, 90, "yuv420p"
        audio = sink.add_stream("aac", rate=48000, layout="stereo")
        for frame in source.decode(*source.streams):
            if isinstance(frame, av.VideoFrame):
                # lavfi marks its frames I, which x264 would obey: let it choose (keyint).
                frame.pict_type = av.video.frame.PictureType.NONE
                sink.mux(video.encode(frame))
            else:
                sink.mux(audio.encode(frame))
        sink.mux(video.encode(None))
        sink.mux(audio.encode(None))
    # Byte-wise TS segments, as the capture leaves them (joined they are the stream again).
    data = whole.read_bytes()
    whole.unlink()
    size = 188 * 20000
    segments = []
    for n, offset in enumerate(range(0, len(data), size)):
        segment = folder / f"seg_{n:05d}.ts"
        segment.write_bytes(data[offset : offset + size])
        segments.append(segment)
    return segments


def _frames(path: Path, kind: str) -> int:
    """Frames ffprobe counts by decoding the whole stream (independent of our code)."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_frames", "-select_streams", kind[0],
            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path),
        ],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    return int(out.strip())


def _first_video_frame_is_a_keyframe(path: Path) -> bool:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return bool(frame.key_frame)
    return False


@pytest.fixture(scope="module")
def three_minutes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _h264_aac_recording(tmp_path_factory.mktemp("pieces") / "rec", MINUTES_3)


def test_a_three_minute_recording_with_a_one_minute_limit_is_three_whole_files(
    three_minutes: list[Path], tmp_path: Path
) -> None:
    whole = transcode(three_minutes, "02", tmp_path / "whole.mp4")
    pieces = transcode_pieces(three_minutes, "02", tmp_path / "cut.mp4", max_seconds=60.0)

    assert [p.path.name for p in pieces] == ["cut.mp4", "cut_2.mp4", "cut_3.mp4"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cut.mp4", "cut_2.mp4", "cut_3.mp4", "whole.mp4"]
    # Not a frame lost or doubled at the cuts: the pieces hold as many as the whole file.
    for kind in ("video", "audio"):
        assert sum(_frames(p.path, kind) for p in pieces) == _frames(whole.path, kind), kind
    assert _frames(whole.path, "video") == 25 * 180
    # Consecutive: each starts where the one before ended, cut on a keyframe every 2 s.
    assert [p.start_seconds for p in pieces] == pytest.approx([0.0, 60.0, 120.0], abs=0.05)
    for piece in pieces:
        probe = ffprobe(piece.path)
        assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
        assert probe.duration == pytest.approx(60.0, abs=0.2)
        assert piece.seconds == pytest.approx(60.0, abs=0.2)
        assert piece.size_bytes == piece.path.stat().st_size
        assert piece.resolution == "160x90"
        # Each plays on its own: starts with a picture, and its sound is in step with it.
        assert _first_video_frame_is_a_keyframe(piece.path)
        assert abs(probe.start("video") - probe.start("audio")) < 0.05
        reached = decode_to_end(piece.path)
        assert reached["video"] == pytest.approx(reached["audio"], abs=0.1)


def test_cuts_wait_for_a_keyframe(tmp_path: Path) -> None:
    # A keyframe every 8 s: a 30 s limit cuts at 32 s, not in the middle of a GOP.
    segments = _h264_aac_recording(tmp_path / "rec", 70.0, gop=200)
    pieces = transcode_pieces(segments, "01", tmp_path / "v.mp4", max_seconds=30.0)
    assert [p.start_seconds for p in pieces] == pytest.approx([0.0, 32.0, 64.0], abs=0.05)
    assert sum(_frames(p.path, "video") for p in pieces) == 25 * 70


def test_mp3_pieces_hold_all_of_the_sound(three_minutes: list[Path], tmp_path: Path) -> None:
    pieces = transcode_pieces(three_minutes, "00", tmp_path / "a.mp3", max_seconds=60.0)
    assert [p.path.name for p in pieces] == ["a.mp3", "a_2.mp3", "a_3.mp3"]
    assert [p.start_seconds for p in pieces] == pytest.approx([0.0, 60.0, 120.0], abs=0.03)
    # Each MP3 decodes to its share (LAME may add up to one frame, 36 ms, at the end).
    reached = [decode_to_end(p.path)["audio"] for p in pieces]
    assert reached == pytest.approx([60.0, 60.0, 60.0], abs=0.05)
    assert sum(p.seconds for p in pieces) == pytest.approx(MINUTES_3, abs=0.05)


def test_no_limit_is_one_file_and_a_short_recording_is_not_cut(
    three_minutes: list[Path], tmp_path: Path
) -> None:
    assert len(transcode_pieces(three_minutes, "01", tmp_path / "one.mp4")) == 1
    assert len(transcode_pieces(three_minutes, "01", tmp_path / "long.mp4", max_seconds=600.0)) == 1


def test_a_failure_at_a_cut_leaves_no_partial_file(three_minutes: list[Path], tmp_path: Path) -> None:
    # The disk refuses the third piece: the error says so, and no partial file is left
    # (the step is retried from the segments).
    class FullAtThird(LocalPieces):
        def open(self, index: int, start_seconds: float) -> tuple[Path, Output]:
            if index == 2:
                raise OSError(28, "No space left on device")
            return super().open(index, start_seconds)

    with SegmentReader(three_minutes) as reader, pytest.raises(TranscodeError, match="No space left"):
        convert_pieces(reader, "02", FullAtThird(lambda i: tmp_path / f"p{i}.mp4"), max_seconds=60.0)
    # The second piece was still open (for audio that plays before the cut) when the third
    # could not start: it goes with the failure, the first stays whole.
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p0.mp4"]


def test_too_short_a_limit_is_refused(three_minutes: list[Path], tmp_path: Path) -> None:
    with pytest.raises(TranscodeError, match="below 10 s"):
        transcode_pieces(three_minutes, "02", tmp_path / "x.mp4", max_seconds=2.0)
