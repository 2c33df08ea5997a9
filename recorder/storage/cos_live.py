"""A file being written, stored to COS while it grows: a writable, seekable file object for
PyAV's muxers whose parts go up as soon as they are whole.

An MP4 or MP3 muxer writes front to back, then at the end goes back once to the first
bytes (the MP4 `mdat` size, the MP3 Xing header) and on to the end again. So the first
part, the head, stays on the local disk until the muxer is done, and is sent last; every
later part is sent, and its spool file deleted, as soon as the muxer writes past it. At the
end only the head and the last part are left to send: storing takes the same time for an
hour as for a minute, and the local disk holds at most a few parts per file.

A write that would go back into a part already sent fails with an OSError: the muxer then
fails, and the recording is converted and stored from its segments the ordinary way.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from qcloud_cos import CosS3Client  # type: ignore[import-untyped]

from recorder.storage.cos_multipart import MAX_PARTS

HEAD_NAME = ".live-head.bin"
PART_NAME = ".live-part-{:05d}.bin"


class CosLiveUpload(io.RawIOBase):
    def __init__(
        self, client: CosS3Client, bucket: str, key: str, url: str, spool: Path, part_size: int
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.url = url
        # A folder of its own: a cut recording has two objects open at a cut (the piece before
        # takes the audio that plays before the cut), in the same take folder.
        self._spool = Path(tempfile.mkdtemp(dir=spool, prefix=".live-"))
        self._part_size = part_size
        self._position = 0
        self._size = 0
        self._head = open(self._spool / HEAD_NAME, "w+b")  # noqa: SIM115 (closed in finish/abort)
        self._tail_index = 0  # index (1, 2, ...) of the part being written; 0: none yet
        self._queued_through = 0  # parts up to this index are sent or on their way
        self._tail: io.BufferedRandom | None = None
        self._queue: queue.Queue[tuple[int, Path] | None] = queue.Queue()
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}
        self._failure: BaseException | None = None
        self._uploader = threading.Thread(target=self._send_parts, name=f"cos-live-{key}", daemon=True)
        self._uploader.start()

    @property
    def output(self) -> CosLiveUpload:
        return self

    # --- the file object PyAV writes to -------------------------------------------------

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def write(self, data: Any) -> int:
        if self._failure is not None:
            raise OSError(errno.EIO, f"storing to COS while recording failed: {self._failure}")
        view = memoryview(data).cast("B")
        written = 0
        while written < len(view):
            index, offset = divmod(self._position, self._part_size)
            room = self._part_size - offset
            chunk = view[written : written + room]
            target = self._head if index == 0 else self._part_file(index)
            target.seek(offset)
            target.write(chunk)
            written += len(chunk)
            self._position += len(chunk)
            self._size = max(self._size, self._position)
            if index > 0 and target.tell() == self._part_size:
                self._queue_tail()  # whole: the muxers only ever go back to the head
        return written

    def _part_file(self, index: int) -> io.BufferedRandom:
        if index <= self._queued_through:
            raise OSError(errno.ESPIPE, f"part {index + 1} is already stored; it cannot be written again")
        if self._tail is None or index != self._tail_index:
            if index >= MAX_PARTS:
                raise OSError(errno.EFBIG, f"more than {MAX_PARTS} parts of {self._part_size} bytes")
            self._queue_tail()
            self._tail_index = index
            self._tail = open(self._spool / PART_NAME.format(index + 1), "w+b")  # noqa: SIM115
        return self._tail

    def _queue_tail(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._queue.put((self._tail_index + 1, Path(self._tail.name)))
            self._queued_through = self._tail_index
            self._tail = None

    # --- the parts going up -------------------------------------------------------------

    def _send_parts(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._failure is not None:
                continue  # drain: the upload has failed, the parts are not wanted
            number, path = item
            try:
                self._send(number, path.read_bytes())
                path.unlink()
            except Exception as exc:  # any failure: the ordinary path stores the file instead
                self._failure = exc

    def _send(self, number: int, data: bytes) -> None:
        if self._upload_id is None:
            answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self._upload_id = str(answer["UploadId"])
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, Body=data, PartNumber=number, UploadId=self._upload_id
        )
        expected = f'"{hashlib.md5(data).hexdigest()}"'
        etag = next((str(v) for k, v in answer.items() if k.lower() == "etag"), expected)
        if etag.strip('"') != expected.strip('"'):
            raise OSError(errno.EIO, f"COS stored part {number} with ETag {etag}, not {expected}")
        self._etags[number] = expected

    def finish(self) -> str:
        """Send what is left (the last part, then the head) and complete; the object's URL."""
        try:
            if self._size <= self._part_size:
                # Small enough for one request: the parts were never needed.
                self._stop_uploader()
                self._raise_failure()
                self._head.seek(0)
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._head.read(self._size))
                return self.url
            self._queue_tail()
            self._stop_uploader()
            self._raise_failure()
            self._head.seek(0)
            self._send(1, self._head.read(self._part_size))
            listing = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Part": listing}
            )
            self._upload_id = None
            return self.url
        finally:
            self.abort()

    def _stop_uploader(self) -> None:
        self._queue.put(None)
        self._uploader.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise OSError(errno.EIO, f"storing to COS while recording failed: {self._failure}")

    def abort(self) -> None:
        """Give up: no object, no parts held by COS, no spool files left."""
        if self._uploader.is_alive():
            self._failure = self._failure or OSError("aborted")
            self._stop_uploader()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            self._upload_id = None
        for file in (self._head, self._tail):
            if file is not None:
                file.close()
        shutil.rmtree(self._spool, ignore_errors=True)

    @property
    def size(self) -> int:
        return self._size
