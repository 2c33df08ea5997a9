from __future__ import annotations

from pathlib import Path

import av
import pytest

from recorder.media.capture import segment_files
from recorder.media.transcode import TranscodeError, transcode
from tests.conftest import RECORDED_SECONDS
from tests.media_check import decode_to_end, ffprobe, moov_before_mdat


def _make(recorded: dict[str, Path], anchor: str, mode: str, out: Path) -> Path:
    destination = out / f"{anchor}_{mode}.{'mp3' if mode == '00' else 'mp4'}"
    transcode(segment_files(recorded[anchor]), mode, destination)
    return destination


def test_mode_00_is_an_mp3_of_the_whole_recording(recorded: dict[str, Path], tmp_path: Path) -> None:
    path = _make(recorded, "av", "00", tmp_path)
    probe = ffprobe(path)
    assert probe.format_name == "mp3"
    assert set(probe.streams) == {"audio"}
    assert probe.codec("audio") == "mp3"
    assert probe.duration == pytest.approx(RECORDED_SECONDS, abs=0.5)
    assert decode_to_end(path)["audio"] == pytest.approx(RECORDED_SECONDS, abs=0.5)


def test_mode_01_copies_the_video_alone_into_a_faststart_mp4(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    path = _make(recorded, "av", "01", tmp_path)
    probe = ffprobe(path)
    assert "mp4" in probe.format_name
    assert set(probe.streams) == {"video"}
    assert probe.codec("video") == "h264"
    assert probe.duration == pytest.approx(RECORDED_SECONDS, abs=0.5)
    assert moov_before_mdat(path)
    assert decode_to_end(path)["video"] == pytest.approx(RECORDED_SECONDS, abs=0.5)


def test_mode_02_keeps_audio_and_video_in_sync(recorded: dict[str, Path], tmp_path: Path) -> None:
    path = _make(recorded, "av", "02", tmp_path)
    probe = ffprobe(path)
    assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
    assert moov_before_mdat(path)
    # Both start together and last as long as each other (within a frame or two).
    assert abs(probe.start("video") - probe.start("audio")) < 0.1
    assert probe.stream_seconds("video") == pytest.approx(probe.stream_seconds("audio"), abs=0.15)
    assert probe.duration == pytest.approx(RECORDED_SECONDS, abs=0.5)
    reached = decode_to_end(path)
    assert reached["video"] == pytest.approx(reached["audio"], abs=0.15)


def test_video_is_copied_not_encoded(recorded: dict[str, Path], tmp_path: Path) -> None:
    report = transcode(segment_files(recorded["av"]), "02", tmp_path / "copy.mp4")
    assert report.streams == ["video:h264 (copied)", "audio:aac (copied)"]


@pytest.mark.parametrize(("anchor", "mode", "missing"), [("audio", "01", "video"), ("video", "00", "audio")])
def test_a_mode_without_its_media_fails_clearly(
    recorded: dict[str, Path], tmp_path: Path, anchor: str, mode: str, missing: str
) -> None:
    destination = tmp_path / f"out.{'mp3' if mode == '00' else 'mp4'}"
    with pytest.raises(TranscodeError, match=f"needs {missing}"):
        transcode(segment_files(recorded[anchor]), mode, destination)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_mode_02_with_the_camera_off_keeps_the_voice(recorded: dict[str, Path], tmp_path: Path) -> None:
    report = transcode(segment_files(recorded["audio"]), "02", tmp_path / "voice.mp4")
    assert report.note == "the anchor published no video"
    probe = ffprobe(tmp_path / "voice.mp4")
    assert set(probe.streams) == {"audio"}
    assert probe.duration == pytest.approx(RECORDED_SECONDS, abs=0.5)


def test_damaged_media_fails_without_leaving_a_file(tmp_path: Path) -> None:
    garbage = tmp_path / "seg_00000.ts"
    garbage.write_bytes(b"\x47" + bytes(range(256)) * 40)
    destination = tmp_path / "out.mp4"
    with pytest.raises(TranscodeError):
        transcode([garbage], "02", destination)
    assert not destination.exists()
    assert not destination.with_name("out.mp4.part").exists()


def test_no_segments_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TranscodeError, match="no media"):
        transcode([], "00", tmp_path / "out.mp3")


def _mpeg2_recording(folder: Path, seconds: float) -> list[Path]:
    """A TS recording in codecs the MP4 path does not copy: MPEG-2 video and MP2 audio."""
    folder.mkdir()
    segment = folder / "seg_00000.ts"
    graph = f"testsrc2=size=320x240:rate=25:duration={seconds}[out0];sine=duration={seconds}[out1]"
    with av.open(graph, format="lavfi") as source, av.open(str(segment), "w", format="mpegts") as sink:
        video = sink.add_stream("mpeg2video", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = sink.add_stream("mp2", rate=44100, layout="mono")
        for frame in source.decode(*source.streams):
            encoder = video if isinstance(frame, av.VideoFrame) else audio
            sink.mux(encoder.encode(frame))
        sink.mux(video.encode(None))
        sink.mux(audio.encode(None))
    return [segment]


def test_codecs_mp4_does_not_copy_are_encoded_to_h264_and_aac(tmp_path: Path) -> None:
    segments = _mpeg2_recording(tmp_path / "mpeg2", 2.0)
    report = transcode(segments, "02", tmp_path / "encoded.mp4")
    assert report.streams == ["video:mpeg2video (encoded to h264)", "audio:mp2 (encoded to aac)"]
    probe = ffprobe(tmp_path / "encoded.mp4")
    assert (probe.codec("video"), probe.codec("audio")) == ("h264", "aac")
    assert probe.duration == pytest.approx(2.0, abs=0.3)
    reached = decode_to_end(tmp_path / "encoded.mp4")
    assert reached["video"] == pytest.approx(reached["audio"], abs=0.15)
    assert report.seconds == pytest.approx(2.0, abs=0.3)


def test_mode_00_is_mono_32_khz_96_kbps(recorded: dict[str, Path], tmp_path: Path) -> None:
    # One channel at 32 kHz: what speech recognition takes and all that 64 kb/s AAC carries,
    # at a fraction of the encoding time of 48 kHz stereo (bench/transcode_vs_ffmpeg.py).
    audio = ffprobe(_make(recorded, "av", "00", tmp_path)).streams["audio"]
    assert (audio["sample_rate"], audio["channels"], audio["bit_rate"]) == ("32000", 1, "96000")


def test_mode_00_resampled_keeps_the_sound_to_its_end(tmp_path: Path) -> None:
    # 44.1 kHz MP2 in, 32 kHz MP3 out: the resampler and the encoder are flushed, so the MP3
    # lasts as long as the decoded source. FFmpeg decodes LAME's MP3 up to one frame (1152
    # samples, 36 ms) longer than what was encoded, the `ffmpeg` command's MP3 alike.
    segments = _mpeg2_recording(tmp_path / "mpeg2", 2.0)
    report = transcode(segments, "00", tmp_path / "resampled.mp3")
    assert report.seconds == pytest.approx(2.0, abs=0.1)
    reached = decode_to_end(tmp_path / "resampled.mp3")["audio"]
    assert report.seconds - 0.005 <= reached <= report.seconds + 0.036 + 0.005
    assert ffprobe(tmp_path / "resampled.mp3").duration == pytest.approx(reached, abs=0.01)
