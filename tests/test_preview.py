from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.media.capture import segment_files
from recorder.media.preview import Preview, PreviewError, poster_frame, waveform

WHITE = np.array([255, 255, 255])


def _picture(path: Path) -> np.ndarray:
    """The image file decoded by PyAV, as RGB rows (height x width x 3)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


MAGIC = {"mjpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def _assert_image(preview: Preview, codec: str, width: int, height: int) -> None:
    """The file is an image of that codec and size, as its first bytes and PyAV read it."""
    assert preview.path.read_bytes().startswith(MAGIC[codec])
    with av.open(str(preview.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == (codec, width, height)
    assert (preview.width, preview.height) == (width, height)
    assert _picture(preview.path).shape == (height, width, 3)


def _nothing_left(folder: Path) -> None:
    assert list(folder.iterdir()) == []


def _colour_of(path: Path) -> str:
    mean = _picture(path).reshape(-1, 3).mean(axis=0)
    names = {"black": (0, 0, 0), "red": (255, 0, 0), "blue": (0, 0, 255)}
    return min(names, key=lambda name: float(np.abs(mean - names[name]).sum()))


# --- inputs with known content, each segment muxed on its own so that its clock starts
# over: the recording's timeline (as the transcoder places it) follows on across the joins.


def _video_segment(
    path: Path, colours: list[tuple[int, int, int]], size: tuple[int, int] = (192, 108), pixel_aspect: int = 1
) -> None:
    """H.264 in MPEG-TS at 10 fps, one frame per colour, a keyframe every second."""
    fps, (width, height) = 10, size
    with av.open(str(path), "w", format="mpegts") as sink:
        video = sink.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(fps)})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.sample_aspect_ratio = Fraction(pixel_aspect)
        for index, colour in enumerate(colours):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), colour, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            sink.mux(video.encode(frame))
        sink.mux(video.encode(None))


def _colour_change(folder: Path) -> list[Path]:
    """6 s of video: black to 0.2 s (a camera opening), red to 3 s, then blue."""
    folder.mkdir()
    first, second = folder / "seg_00000.ts", folder / "seg_00001.ts"
    _video_segment(first, [(0, 0, 0)] * 2 + [(255, 0, 0)] * 28)
    _video_segment(second, [(0, 0, 255)] * 30)
    return [first, second]


def _audio_segment(path: Path, amplitude: float, seconds: float) -> None:
    """AAC 48 kHz stereo in MPEG-TS: a 1 kHz tone of `amplitude` (0: silence)."""
    rate, size = 48000, 1024
    with av.open(str(path), "w", format="mpegts") as sink:
        audio = sink.add_stream("aac", rate=rate, layout="stereo")
        for first in range(0, int(seconds * rate), size):
            t = (first + np.arange(size)) / rate
            tone = (amplitude * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, first, Fraction(1, rate)
            sink.mux(audio.encode(frame))
        sink.mux(audio.encode(None))


def _tone_after_silence(folder: Path) -> list[Path]:
    """2 s of silence, then 2 s of a loud tone."""
    folder.mkdir()
    first, second = folder / "seg_00000.ts", folder / "seg_00001.ts"
    _audio_segment(first, 0.0, 2.0)
    _audio_segment(second, 0.9, 2.0)
    return [first, second]


@pytest.fixture(scope="module")
def colour_change(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _colour_change(tmp_path_factory.mktemp("colours") / "recording")


@pytest.fixture(scope="module")
def tone_after_silence(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _tone_after_silence(tmp_path_factory.mktemp("tone") / "recording")


def _drawn_rows(image: np.ndarray) -> np.ndarray:
    """Per column, how many rows differ from the background."""
    return (image != WHITE).any(axis=2).sum(axis=0)


# --- posters ----------------------------------------------------------------------------


def test_poster_of_a_recording_is_a_jpeg_of_its_size(recorded: dict[str, Path], tmp_path: Path) -> None:
    preview = poster_frame(segment_files(recorded["av"]), tmp_path / "av.jpg")
    assert (preview.path, preview.kind) == (tmp_path / "av.jpg", "poster")
    _assert_image(preview, "mjpeg", 320, 240)  # the sim room's anchors publish 320x240
    assert list(tmp_path.iterdir()) == [tmp_path / "av.jpg"]  # no temporary left beside it


def test_poster_wider_than_max_width_is_scaled_down_keeping_its_shape(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    _assert_image(
        poster_frame(segment_files(recorded["video"]), tmp_path / "a.jpg", max_width=160), "mjpeg", 160, 120
    )
    # 320x240 into 250 wide: 187.5 high, rounded down to even dimensions.
    _assert_image(
        poster_frame(segment_files(recorded["video"]), tmp_path / "b.jpg", max_width=250), "mjpeg", 250, 186
    )


def test_poster_shows_wide_pixels_as_wide(tmp_path: Path) -> None:
    # 160x120 whose pixels are twice as wide as high (anamorphic): shown 320x120.
    _video_segment(tmp_path / "seg_00000.ts", [(0, 0, 255)] * 10, size=(160, 120), pixel_aspect=2)
    _assert_image(poster_frame([tmp_path / "seg_00000.ts"], tmp_path / "p.jpg"), "mjpeg", 320, 120)


@pytest.mark.parametrize(
    ("start", "end", "colour"),
    [
        (0.0, None, "blue"),  # 5 s in: past the start of a long recording
        (0.0, 3.0, "red"),  # 0.3 s in, not the black first frame
        (2.0, 2.95, "red"),  # the next keyframe (3 s, blue) is past the window's end
        (3.0, 3.5, "blue"),  # a window shorter than a GOP
        (1.5, 4.5, "red"),  # a tenth in: 1.8 s
        (3.2, 6.0, "blue"),
        (5.5, None, "blue"),  # a window shorter than the lead: its last frame
    ],
)
def test_poster_is_a_frame_from_inside_the_window(
    colour_change: list[Path], tmp_path: Path, start: float, end: float | None, colour: str
) -> None:
    preview = poster_frame(colour_change, tmp_path / "p.jpg", start_seconds=start, end_seconds=end)
    _assert_image(preview, "mjpeg", 192, 108)
    assert _colour_of(preview.path) == colour


def test_poster_of_a_recording_without_video_fails_and_leaves_nothing(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(PreviewError, match="the recording has no video"):
        poster_frame(segment_files(recorded["audio"]), tmp_path / "p.jpg")
    _nothing_left(tmp_path)


def test_poster_of_a_window_without_video_fails(colour_change: list[Path], tmp_path: Path) -> None:
    with pytest.raises(PreviewError, match="no video after 7 s"):
        poster_frame(colour_change, tmp_path / "p.jpg", start_seconds=7.0)
    with pytest.raises(PreviewError, match="no video between 8 s and 9 s"):
        poster_frame(colour_change, tmp_path / "p.jpg", start_seconds=8.0, end_seconds=9.0)
    with pytest.raises(PreviewError, match="empty"):
        poster_frame(colour_change, tmp_path / "p.jpg", start_seconds=2.0, end_seconds=2.0)
    _nothing_left(tmp_path)


# --- waveforms --------------------------------------------------------------------------


def test_waveform_of_a_recording_is_a_png_of_the_asked_size(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    preview = waveform(segment_files(recorded["av"]), tmp_path / "av.png")
    assert (preview.path, preview.kind) == (tmp_path / "av.png", "waveform")
    _assert_image(preview, "png", 1200, 240)
    small = waveform(segment_files(recorded["audio"]), tmp_path / "audio.png", width=300, height=61)
    _assert_image(small, "png", 300, 61)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "audio.png", tmp_path / "av.png"]
    # The sim room's anchors send a steady tone (at -18 dBFS): a band, wide across the middle.
    drawn = _drawn_rows(_picture(preview.path))
    assert np.median(drawn) > 0.5 * 240
    assert (drawn[100:-100] > 0.5 * 240).all()


def test_waveform_shows_silence_flat_and_a_tone_tall(tone_after_silence: list[Path], tmp_path: Path) -> None:
    image = _picture(waveform(tone_after_silence, tmp_path / "w.png", width=400, height=100).path)
    drawn = _drawn_rows(image)
    # The picture spans the 4 s: 2 s of silence on the left, the tone on the right (AAC
    # smears a tone's onset over a frame or two: the columns around the change are left out).
    silent, loud = drawn[: 400 * 45 // 100], drawn[400 * 55 // 100 :]
    assert (silent == 2).all()  # the mid line: rows 49 and 50
    assert (image[49:51, : silent.size] != WHITE).all()
    assert (loud >= 90).all()


@pytest.mark.parametrize(
    ("start", "end", "loud"), [(0.1, 1.9, False), (0.5, 1.0, False), (2.2, 3.9, True), (3.0, 3.5, True)]
)
def test_waveform_shows_the_window_only(
    tone_after_silence: list[Path], tmp_path: Path, start: float, end: float, loud: bool
) -> None:
    preview = waveform(tone_after_silence, tmp_path / "w.png", start_seconds=start, end_seconds=end)
    drawn = _drawn_rows(_picture(preview.path))
    assert (drawn >= 220).all() if loud else (drawn == 2).all()


def test_waveform_tells_no_audio_from_silence(tone_after_silence: list[Path], tmp_path: Path) -> None:
    # From 1 s to 6 s over 1000 columns: silence, the tone from 2 s, no audio from about 4 s
    # (the recording's end). Where there is no audio at all the picture has only its axis,
    # in a colour of its own.
    preview = waveform(tone_after_silence, tmp_path / "w.png", start_seconds=1.0, end_seconds=6.0, width=1000)
    image = _picture(preview.path)
    drawn = _drawn_rows(image)
    assert (drawn[20:180] == 2).all()
    assert (drawn[220:580] >= 220).all()
    assert (drawn[640:] == 2).all()
    silence, nothing = image[120, 20:180], image[120, 640:]
    assert (silence == silence[0]).all() and (nothing == nothing[0]).all()
    assert not np.array_equal(silence[0], nothing[0])


def test_waveform_of_a_recording_without_audio_fails_and_leaves_nothing(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(PreviewError, match="the recording has no audio"):
        waveform(segment_files(recorded["video"]), tmp_path / "w.png")
    with pytest.raises(PreviewError, match="no audio after 60 s"):
        waveform(segment_files(recorded["av"]), tmp_path / "w.png", start_seconds=60.0)
    _nothing_left(tmp_path)


# --- what cannot be read ----------------------------------------------------------------


@pytest.mark.parametrize("make", [poster_frame, waveform])
def test_damaged_or_missing_media_fails_without_leaving_a_file(
    make: Callable[..., Preview], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    garbage = tmp_path / "seg_00000.ts"
    garbage.write_bytes(b"\x47" + bytes(range(256)) * 40)
    with pytest.raises(PreviewError, match="the recording"):
        make([garbage], out / "preview")
    with pytest.raises(PreviewError, match="cannot be read"):
        make([tmp_path / "seg_99999.ts"], out / "preview")
    with pytest.raises(PreviewError, match="no media on disk"):
        make([], out / "preview")
    _nothing_left(out)


def test_a_preview_that_cannot_be_written_leaves_nothing(colour_change: list[Path], tmp_path: Path) -> None:
    with pytest.raises(PreviewError, match="cannot be written"):
        poster_frame(colour_change, tmp_path / "no such folder" / "p.jpg")
    _nothing_left(tmp_path)
