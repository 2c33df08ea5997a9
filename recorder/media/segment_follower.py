"""Read a recording's MPEG-TS segments as one stream while they are still being written.

The live counterpart of `SegmentReader`: it hands over each segment's bytes as soon as the
capture has flushed them (every packet is flushed), moves on to the next segment once that
one exists (the segment muxer closes a segment before it opens the next), and reaches the
end only when the recording is over and every byte has been read. So a converter reading
it finishes a few moments after the stream ends, whatever the recording's length.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from recorder.media.capture import SEGMENT_PATTERN

# How long a reader that has caught up waits before looking again. The stream delivers
# about 150 kB/s at 720p, so a quarter of a second is a few TS packets behind, and a few
# wake-ups a second per stream cost nothing even for hundreds of streams.
CAUGHT_UP_POLL_SECONDS = 0.25


class FollowingSegmentReader(io.RawIOBase):
    """`folder`'s segments from `first` on; `ended` is set once no segment will be written
    or grow any more. `cancelled`, when set, ends reading at once (an error to the reader)."""

    def __init__(
        self,
        folder: Path,
        ended: threading.Event,
        *,
        first: int = 0,
        cancelled: threading.Event | None = None,
        poll_seconds: float = CAUGHT_UP_POLL_SECONDS,
    ) -> None:
        self._folder = folder
        self._ended = ended
        self._cancelled = cancelled or threading.Event()
        self._poll = poll_seconds
        self._index = first
        self._current: io.BufferedReader | None = None
        self.consumed = 0  # bytes handed over so far

    def readable(self) -> bool:
        return True

    def _path(self, index: int) -> Path:
        return self._folder / (SEGMENT_PATTERN % index)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._cancelled.is_set():
            if self._current is None:
                if not self._path(self._index).exists():
                    if self._ended.is_set():
                        return 0  # the recording is over and every segment was read
                    self._ended.wait(self._poll)
                    continue
                self._current = open(self._path(self._index), "rb")  # noqa: SIM115 (closed below)
            # Whether the recording was over before this read: then an empty read means the
            # segment will not grow, even if the end came while reading.
            over = self._ended.is_set()
            count = self._current.readinto(buffer)
            if count:
                self.consumed += count
                return count
            if self._path(self._index + 1).exists() or over:
                # The muxer closed this segment before opening the next: nothing more comes.
                self._current.close()
                self._current = None
                self._index += 1
                continue
            self._ended.wait(self._poll)
        raise OSError("reading the recording was cancelled")

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()
