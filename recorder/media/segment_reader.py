"""Read a recording's MPEG-TS segments as one stream.

Segments of one MPEG-TS stream joined byte for byte are again that stream (it is how HLS
segments relate), so the transcoder reads them through this file-like object instead of a
concat list whose length would grow with the recording.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path


class SegmentReader(io.RawIOBase):
    def __init__(self, segments: Sequence[Path]) -> None:
        self._pending = list(segments)
        self._current: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._current is None:
                if not self._pending:
                    return 0
                self._current = open(self._pending.pop(0), "rb")  # noqa: SIM115 (closed below)
            count = self._current.readinto(buffer)
            if count:
                return count
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()
