"""One file up to COS in parts, several at a time, resumable after a failed attempt.

The SDK's own `upload_file` does parts too, but when a part fails it says only "some
upload_part fail": here the first failing part's real error (a 403, a 503, a dropped
connection) reaches the caller, so refused credentials are not retried pointlessly. The
upload id is noted beside the file, so the next attempt sends only the parts COS lacks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcloud_cos import CosS3Client  # type: ignore[import-untyped]
from qcloud_cos.cos_exception import CosServiceError  # type: ignore[import-untyped]

MAX_PARTS = 10000  # COS's limit per upload
LIST_PAGE = 1000


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    length: int


def plan_parts(size: int, part_size: int) -> list[Part]:
    """Parts of `part_size` (grown if the file would need more than COS allows)."""
    part_size = max(part_size, math.ceil(size / MAX_PARTS))
    count = max(1, math.ceil(size / part_size))
    return [Part(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)]


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


class MultipartUpload:
    def __init__(
        self, client: CosS3Client, bucket: str, key: str, source: Path, part_size: int, threads: int
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.source = source
        self.parts = plan_parts(source.stat().st_size, part_size)
        self.threads = threads
        # Beside the file, so it lives exactly as long as the local copy does.
        self.journal = source.with_name(f".{source.name}.cos-upload.json")

    def run(self) -> dict[str, Any]:
        """Upload every part COS lacks and complete; the answer carries the object's CRC64."""
        upload_id, done = self._resume() or (self._initiate(), {})
        missing = [part for part in self.parts if part.number not in done]
        if missing:
            done.update(self._send(upload_id, missing))
        listing = [{"PartNumber": n, "ETag": done[n]} for n in sorted(done)]
        answer = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=upload_id, MultipartUpload={"Part": listing}
        )
        self.journal.unlink(missing_ok=True)
        return dict(answer)

    def _initiate(self) -> str:
        answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
        upload_id = str(answer["UploadId"])
        noted = {"key": self.key, "upload_id": upload_id, "part_size": self.parts[0].length}
        temporary = self.journal.with_suffix(".tmp")
        temporary.write_text(json.dumps(noted))
        os.replace(temporary, self.journal)
        return upload_id

    def _resume(self) -> tuple[str, dict[int, str]] | None:
        """The earlier attempt's upload id and the parts COS holds that match this file."""
        try:
            noted = json.loads(self.journal.read_text())
        except (OSError, ValueError):
            return None
        if noted.get("key") != self.key or noted.get("part_size") != self.parts[0].length:
            return None
        upload_id = str(noted["upload_id"])
        try:
            held = self._list_parts(upload_id)
        except CosServiceError as exc:
            if exc.get_error_code() == "NoSuchUpload":
                return None
            raise
        done: dict[int, str] = {}
        for part in self.parts:
            etag = held.get((part.number, part.length))
            if etag is not None and etag == _etag(self._read(part)):
                done[part.number] = etag
        return upload_id, done

    def _list_parts(self, upload_id: str) -> dict[tuple[int, int], str]:
        held: dict[tuple[int, int], str] = {}
        marker = 0
        for _ in range(MAX_PARTS // LIST_PAGE + 1):
            page = self.client.list_parts(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id, PartNumberMarker=marker
            )
            entries = page.get("Part", [])
            for entry in entries if isinstance(entries, list) else [entries]:
                held[(int(entry["PartNumber"]), int(entry["Size"]))] = str(entry["ETag"])
            if page.get("IsTruncated") != "true":
                break
            marker = int(page["NextPartNumberMarker"])
        return held

    def _read(self, part: Part) -> bytes:
        with self.source.open("rb") as file:
            file.seek(part.offset)
            return file.read(part.length)

    def _send_one(self, upload_id: str, part: Part) -> str:
        data = self._read(part)
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, Body=data, PartNumber=part.number, UploadId=upload_id
        )
        etag = next((str(v) for k, v in answer.items() if k.lower() == "etag"), None)
        return etag if etag is not None else _etag(data)

    def _send(self, upload_id: str, parts: list[Part]) -> dict[int, str]:
        """All parts, `threads` at a time; the first part to fail stops the rest."""
        sent: dict[int, str] = {}
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="cos-part") as pool:
            futures: dict[Future[str], Part] = {pool.submit(self._send_one, upload_id, p): p for p in parts}
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in finished if f.exception() is not None), None)
            if failed is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise failed.exception()  # type: ignore[misc]
        for future, part in futures.items():
            sent[part.number] = future.result()
        return sent
