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
from pathlib import Path

from recorder.media.segment_follower import FollowingSegmentReader
from recorder.media.transcode import TranscodeError, TranscodeReport, convert
from recorder.storage.base import LiveObject

# After the stream ends, how long the last conversion and storing may take before the
# ordinary steps take over. Normally a second or two; this bounds a stuck upload.
FINISH_SECONDS = 300.0


class LiveFinisher:
    """One take's live conversion. `finish()` once the recording is over; `abort()` if the
    recording failed."""

    def __init__(self, folder: Path, mode: str, destination: Path, stored: LiveObject | None = None) -> None:
        self._mode = mode
        self._destination = destination
        self._stored = stored
        self._partial = destination.with_name(destination.name + ".live.part")
        self._ended = threading.Event()
        self._cancelled = threading.Event()
        self.report: TranscodeReport | None = None
        self.failure: str | None = None
        self._reader = FollowingSegmentReader(folder, self._ended, cancelled=self._cancelled)
        self._thread = threading.Thread(target=self._run, name=f"live-{folder.name}", daemon=True)
        self._thread.start()

    @property
    def consumed(self) -> int:
        """Bytes of the recording converted so far."""
        return self._reader.consumed

    def _run(self) -> None:
        try:
            with self._reader as reader:
                output = self._stored.output if self._stored is not None else str(self._partial)
                report = convert(reader, self._mode, self._destination, output, faststart=False)
            if self._stored is not None:
                report.stored_url = self._stored.finish()
            else:
                self._partial.replace(self._destination)
            self.report = report
        except TranscodeError as exc:
            self.failure = str(exc)
        except Exception as exc:  # whatever it was, the ordinary steps do the work instead
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            if self.report is None:
                self._discard()

    def _discard(self) -> None:
        if self._stored is not None:
            self._stored.abort()
        self._partial.unlink(missing_ok=True)

    def finish(self, seconds: float = FINISH_SECONDS) -> TranscodeReport | None:
        """The recording is over: the finished file's report, or None (see `failure`)."""
        self._ended.set()
        self._thread.join(seconds)
        if self._thread.is_alive():
            self.abort()
            self.failure = f"not finished {seconds:g} s after the recording ended"
        return self.report

    def abort(self) -> None:
        """Stop now and leave nothing behind (no partial file, no parts held by COS)."""
        self._cancelled.set()
        self._ended.set()
        self._thread.join(10.0)
        with contextlib.suppress(OSError):
            self._discard()
