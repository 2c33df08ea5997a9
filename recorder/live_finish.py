"""Convert a take, and store it to COS, while it is being recorded.

The capture writes crash-safe segments as before; beside it, a thread reads them as they
grow (`FollowingSegmentReader`) through the same conversion the transcode step uses, into
the final file: in the work folder, or straight into storage (the storage folder, or COS
part by part: `CosLiveUpload`). When the
stream ends, only its last moments are left to convert and store, so a file is ready
seconds after the end whatever the recording's length.

It only ever saves work. The segments stay the recording: if anything here fails (COS goes
away, a codec needs more than a copy can give), the failure is logged and the transcode and
upload steps do their ordinary work from the segments, with their retries.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

from recorder.media.pieces import LocalPieces, Output, PieceOutputs, TranscodeReport
from recorder.media.segment_follower import FollowingSegmentReader
from recorder.media.transcode import TranscodeError, convert_pieces
from recorder.storage.base import LiveObject
from recorder.stored_journal import StoredJournal

# After the stream ends, how long the last conversion and storing may take before the
# ordinary steps take over. Normally a second or two; this bounds a stuck upload.
FINISH_SECONDS = 300.0


class StoredPieces:
    """Each piece stored while it is written, each its own object (`open_object(start)`),
    finished as soon as it is whole: a cut recording's first pieces are in storage while
    the anchor is still on air. The journal says which are, should the rest fail."""

    def __init__(
        self,
        open_object: Callable[[float], LiveObject],
        destination_of: Callable[[int], Path],
        journal: StoredJournal,
    ) -> None:
        self._open_object = open_object
        self._destination_of = destination_of
        self._journal = journal
        self._open: dict[Path, LiveObject] = {}

    def open(self, index: int, start_seconds: float) -> tuple[Path, Output]:
        destination = self._destination_of(index)
        stored = self._open_object(start_seconds)
        self._open[destination] = stored
        return destination, stored.output

    def close(self, report: TranscodeReport) -> None:
        report.stored_url = self._open.pop(report.path).finish()
        self._journal.add(report.path.name, report.stored_url)

    def abort(self) -> None:
        for stored in self._open.values():
            stored.abort()
        self._open.clear()


class LiveFinisher:
    """One take's live conversion. `finish()` once the recording is over; `abort()` if the
    recording failed."""

    def __init__(
        self, folder: Path, mode: str, outputs: PieceOutputs, max_seconds: float | None = None
    ) -> None:
        self._mode = mode
        self._outputs = outputs
        self._max_seconds = max_seconds
        self._ended = threading.Event()
        self._cancelled = threading.Event()
        self.reports: list[TranscodeReport] | None = None
        self.failure: str | None = None
        self._reader = FollowingSegmentReader(folder, self._ended, cancelled=self._cancelled)
        self._thread = threading.Thread(target=self._run, name=f"live-{folder.name}", daemon=True)
        self._thread.start()

    @classmethod
    def to_folder(
        cls, folder: Path, mode: str, destination_of: Callable[[int], Path], max_seconds: float | None = None
    ) -> LiveFinisher:
        """Files in the work folder (stored by the upload step afterwards)."""
        return cls(folder, mode, LocalPieces(destination_of, suffix=".live.part"), max_seconds)

    @classmethod
    def to_storage(
        cls,
        folder: Path,
        mode: str,
        destination_of: Callable[[int], Path],
        open_object: Callable[[float], LiveObject],
        max_seconds: float | None = None,
    ) -> LiveFinisher:
        """Files stored while they are written (`open_object(start)` for each); which are
        stored is journalled in `folder`."""
        return cls(
            folder, mode, StoredPieces(open_object, destination_of, StoredJournal(folder)), max_seconds
        )

    @property
    def consumed(self) -> int:
        """Bytes of the recording converted so far."""
        return self._reader.consumed

    def _run(self) -> None:
        try:
            with self._reader as reader:
                self.reports = convert_pieces(
                    reader, self._mode, self._outputs, max_seconds=self._max_seconds, faststart=False
                )
        except TranscodeError as exc:
            self.failure = str(exc)
        except Exception as exc:  # whatever it was, the ordinary steps do the work instead
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            if self.reports is None:
                self._discard()

    def _discard(self) -> None:
        self._outputs.abort()

    def finish(self, seconds: float = FINISH_SECONDS) -> list[TranscodeReport] | None:
        """The recording is over: the finished files' reports, or None (see `failure`)."""
        self._ended.set()
        self._thread.join(seconds)
        if self._thread.is_alive():
            self.abort()
            self.failure = f"not finished {seconds:g} s after the recording ended"
        return self.reports

    def abort(self) -> None:
        """Stop now and leave nothing behind (no partial file, no parts held by COS)."""
        self._cancelled.set()
        self._ended.set()
        self._thread.join(10.0)
        with contextlib.suppress(OSError):
            self._discard()
