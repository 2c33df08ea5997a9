"""FollowingSegmentReader: segments read while a writer still writes them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from recorder.media.capture import SEGMENT_PATTERN
from recorder.media.segment_follower import FollowingSegmentReader

POLL = 0.02


def _write_slowly(folder: Path, pieces: list[list[bytes]], ended: threading.Event) -> None:
    """Segment after segment, each in pieces with pauses, as a capture flushes packets."""
    for index, chunks in enumerate(pieces):
        with open(folder / (SEGMENT_PATTERN % index), "wb") as segment:
            for chunk in chunks:
                segment.write(chunk)
                segment.flush()
                time.sleep(0.01)
    ended.set()


def _read_all(reader: FollowingSegmentReader) -> bytes:
    data = bytearray()
    for _ in range(100_000):  # bounded: the test's data is far smaller
        chunk = reader.read(4096)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("the reader never reached the end")


def test_reads_every_byte_in_order_while_the_segments_are_written(tmp_path: Path) -> None:
    pieces = [[os.urandom(1000) for _ in range(5)] for _ in range(4)]
    ended = threading.Event()
    writer = threading.Thread(target=_write_slowly, args=(tmp_path, pieces, ended))
    writer.start()
    with FollowingSegmentReader(tmp_path, ended, poll_seconds=POLL) as reader:
        data = _read_all(reader)
    writer.join(timeout=10)
    assert data == b"".join(b"".join(chunks) for chunks in pieces)


def test_a_caught_up_reader_waits_for_more_until_the_recording_is_over(tmp_path: Path) -> None:
    (tmp_path / (SEGMENT_PATTERN % 0)).write_bytes(b"first")
    ended = threading.Event()
    with FollowingSegmentReader(tmp_path, ended, poll_seconds=POLL) as reader:
        assert reader.read(100) == b"first"
        # Nothing more yet: the read waits (the recording goes on) rather than end the file.
        got: list[bytes] = []
        waiting = threading.Thread(target=lambda: got.append(reader.read(100)))
        waiting.start()
        waiting.join(timeout=0.3)
        assert waiting.is_alive()
        (tmp_path / (SEGMENT_PATTERN % 1)).write_bytes(b"second")
        waiting.join(timeout=5)
        assert got == [b"second"]
        ended.set()
        assert reader.read(100) == b""


def test_the_end_comes_only_after_the_last_bytes_are_read(tmp_path: Path) -> None:
    """Bytes flushed just before the end is announced are still read."""
    segment = tmp_path / (SEGMENT_PATTERN % 0)
    segment.write_bytes(b"a")
    ended = threading.Event()
    with FollowingSegmentReader(tmp_path, ended, poll_seconds=POLL) as reader:
        assert reader.read(10) == b"a"
        with open(segment, "ab") as more:
            more.write(b"b")
        ended.set()
        assert reader.read(10) == b"b"
        assert reader.read(10) == b""


def test_cancelling_ends_a_waiting_read_with_an_error(tmp_path: Path) -> None:
    ended, cancelled = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        with FollowingSegmentReader(tmp_path, ended, cancelled=cancelled, poll_seconds=POLL) as reader:
            try:
                reader.read(10)
            except OSError as exc:
                errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.1)
    cancelled.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [str(e) for e in errors] == ["reading the recording was cancelled"]


@pytest.mark.parametrize("first", [0, 2])
def test_starts_at_the_given_segment(tmp_path: Path, first: int) -> None:
    for index in range(3):
        (tmp_path / (SEGMENT_PATTERN % index)).write_bytes(bytes([index]) * 3)
    ended = threading.Event()
    ended.set()
    with FollowingSegmentReader(tmp_path, ended, first=first, poll_seconds=POLL) as reader:
        assert _read_all(reader) == b"".join(bytes([i]) * 3 for i in range(first, 3))
