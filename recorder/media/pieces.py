"""The files a conversion writes: one per recording, or one per piece of a recording cut at
a maximum file duration (`RECORDER_MAX_FILE_SECONDS`, as TRTC's MaxMediaFileDuration).

The converter asks a `PieceOutputs` where each piece goes when it starts it, and tells it
when the piece is whole. Where that is differs: a file in the work folder renamed when whole
(`LocalPieces`), or an object stored while it is written (recorder.live_finish).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

# Where a converted file is written: a path, or a file object PyAV writes and seeks in.
Output = str | BinaryIO | io.RawIOBase


@dataclass
class TranscodeReport:
    """One converted file."""

    path: Path
    streams: list[str]  # e.g. ["video:h264 (copied)", "audio:aac (copied)"]
    seconds: float
    note: str = ""  # what the user should know although it worked
    # Where the file is stored already, when it was stored while being written (live).
    stored_url: str = ""
    # Where the file starts in the recording: 0 unless the recording was cut into pieces.
    start_seconds: float = 0.0
    size_bytes: int = 0
    resolution: str = ""  # "1280x720"; "" without video


class PieceOutputs(Protocol):
    def open(self, index: int, start_seconds: float) -> tuple[Path, Output]:
        """Where piece `index` (from 0), starting `start_seconds` into the recording, is
        written: the path its report names, and the path or file object to write."""
        ...

    def close(self, report: TranscodeReport) -> None:
        """The piece the report describes is whole (its muxer is closed): finish it."""
        ...

    def abort(self) -> None:
        """The conversion failed: leave nothing of the pieces not yet closed."""
        ...


def output_size(output: Output) -> int:
    """The size of a written output: a path's, or a seekable file object's end."""
    if isinstance(output, str):
        return os.path.getsize(output)
    return output.seek(0, io.SEEK_END)


class LocalPieces:
    """Pieces written as files: each under a temporary name beside its final one, renamed
    when whole, so a file with a final name is always complete."""

    def __init__(self, destination_of: Callable[[int], Path], suffix: str = ".part") -> None:
        self._destination_of = destination_of
        self._suffix = suffix
        self._open: dict[Path, Path] = {}  # final path: temporary path

    def open(self, index: int, start_seconds: float) -> tuple[Path, Output]:
        destination = self._destination_of(index)
        partial = destination.with_name(destination.name + self._suffix)
        self._open[destination] = partial
        return destination, str(partial)

    def close(self, report: TranscodeReport) -> None:
        partial = self._open.pop(report.path)
        os.replace(partial, report.path)

    def abort(self) -> None:
        for partial in self._open.values():
            partial.unlink(missing_ok=True)
        self._open.clear()


def piece_name(name: str, index: int) -> str:
    """A piece's file name: the first keeps the recording's name (as an uncut recording has
    it), later ones add their number: `a.mp4`, `a_2.mp4`, `a_3.mp4`."""
    if index == 0:
        return name
    stem, dot, extension = name.rpartition(".")
    return f"{stem}_{index + 1}{dot}{extension}" if dot else f"{name}_{index + 1}"
