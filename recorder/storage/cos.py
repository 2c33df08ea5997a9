"""Tencent COS through cos-python-sdk-v5: the request's bucket, region and Path.

RecordFile is the object's URL as COS gives it (https://{Bucket}.cos.{Region}.myqcloud.com/
{key}, or the configured custom domain). Every stored object is checked against the CRC64
that COS computes, and a key that already holds another file is never written over.
"""

from __future__ import annotations

import contextlib
import posixpath
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from qcloud_cos import CosConfig, CosS3Client  # type: ignore[import-untyped]
from qcloud_cos.cos_exception import CosException, CosServiceError  # type: ignore[import-untyped]

from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage.base import StorageError
from recorder.storage.cos_errors import explain
from recorder.storage.cos_live import CosLiveUpload
from recorder.storage.cos_multipart import MultipartUpload
from recorder.storage.credentials import CosCredentials
from recorder.storage.integrity import file_crc64

CRC64_HEADER = "x-cos-hash-crc64ecma"
MIB = 1024 * 1024
# Written (empty) and removed again when a run starts, to prove the keys may write there.
WRITE_CHECK_NAME = ".trtc-recorder-write-check"
# `name-1.mp4`, `name-2.mp4`, ...: how far to look for a free key before giving up.
MAX_ALTERNATIVE_KEYS = 100


class CosStorage:
    def __init__(
        self, location: CosLocation, credentials: CosCredentials, settings: RecorderSettings
    ) -> None:
        self.bucket = location.Bucket
        self.region = location.Region
        self.prefix = location.Path.strip("/")
        self.credentials = credentials
        self.part_size = settings.cos_part_size_mb * MIB
        self.threads = settings.cos_upload_threads
        token = credentials.token.get_secret_value() if credentials.token else None
        config = CosConfig(
            Region=location.Region,
            SecretId=credentials.secret_id,
            SecretKey=credentials.secret_key.get_secret_value(),
            Token=token,
            Scheme=settings.cos_scheme,
            IP=settings.cos_ip,
            Port=settings.cos_port,
            Domain=settings.cos_domain,
            Timeout=settings.cos_timeout_seconds,
        )
        self.client = CosS3Client(config, retry=settings.cos_request_retries)
        # The URL users get: the bucket's public name, never the IP a test or proxy uses.
        self._public = CosConfig(
            Region=location.Region, Scheme="https", Domain=settings.cos_domain, Anonymous=True
        )

    def url(self, key: str) -> str:
        return str(self._public.uri(bucket=self.bucket, path=key))

    def key_of(self, url: str) -> str:
        return unquote(urlparse(url).path).lstrip("/")

    def _error(self, exc: CosException) -> StorageError:
        return explain(exc, bucket=self.bucket, region=self.region, credentials_from=self.credentials.source)

    def check_writable(self) -> None:
        key = posixpath.join(self.prefix, WRITE_CHECK_NAME) if self.prefix else WRITE_CHECK_NAME
        try:
            self.client.put_object(Bucket=self.bucket, Body=b"", Key=key)
        except CosException as exc:
            raise self._error(exc) from None
        # Leave nothing behind if the keys may delete; writing is all a run needs.
        with contextlib.suppress(CosException):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def store(self, source: Path, key: str) -> str:
        size = source.stat().st_size
        # The file's CRC64 is worked out while the parts go up: the upload mostly waits on
        # the network, so the check costs little time on top.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crc64") as background:
            crc = background.submit(file_crc64, source)
            try:
                for candidate in _alternative_keys(key):
                    found = self._stored_size_and_crc(candidate)
                    if found is None:
                        self._upload(source, candidate, crc)
                        return self.url(candidate)
                    if found == (size, crc.result()):
                        # An earlier attempt stored it and then lost the answer: done already.
                        return self.url(candidate)
            except CosException as exc:
                raise self._error(exc) from None
        raise _no_free_key(key)

    def open_live(self, key: str, spool: Path) -> CosLiveUpload:
        """A file object whose bytes go to COS under `key` (or the first free variant) while
        it is written; `finish()` completes it. Parts wait in `spool` until sent."""
        try:
            for candidate in _alternative_keys(key):
                if self._stored_size_and_crc(candidate) is None:
                    return CosLiveUpload(
                        self.client, self.bucket, candidate, self.url(candidate), spool, self.part_size
                    )
        except CosException as exc:
            raise self._error(exc) from None
        raise _no_free_key(key)

    def _stored_size_and_crc(self, key: str) -> tuple[int, int] | None:
        try:
            headers = self.client.head_object(Bucket=self.bucket, Key=key)
        except CosServiceError as exc:
            # 404: free. 403: keys that may write but not read (least privilege) cannot
            # look; the key is unique to the take (anchor and start to the microsecond),
            # and the upload itself will say if the keys are refused.
            if exc.get_status_code() in (403, 404):
                return None
            raise
        crc = _header(headers, CRC64_HEADER)
        return int(_header(headers, "Content-Length") or -1), int(crc) if crc else -1

    def _upload(self, source: Path, key: str, expected_crc: Future[int]) -> None:
        if source.stat().st_size <= self.part_size:
            with source.open("rb") as body:
                answer = self.client.put_object(Bucket=self.bucket, Body=body, Key=key)
        else:
            upload = MultipartUpload(self.client, self.bucket, key, source, self.part_size, self.threads)
            answer = upload.run()
        reported = _header(answer, CRC64_HEADER)
        if reported is None:
            found = self._stored_size_and_crc(key)
            reported = str(found[1]) if found else None
        crc = expected_crc.result()
        if reported is None or int(reported) != crc:
            # Ours and wrong: remove it so the retry can use the same key.
            with contextlib.suppress(CosException):
                self.client.delete_object(Bucket=self.bucket, Key=key)
            raise StorageError(
                f"COS reports CRC64 {reported} for {key}, but the file's is {crc}: the upload was damaged"
            )


def _no_free_key(key: str) -> StorageError:
    return StorageError(
        f"{key} and its -1 to -{MAX_ALTERNATIVE_KEYS} variants all hold other files", permanent=True
    )


def _alternative_keys(key: str) -> list[str]:
    stem, extension = posixpath.splitext(key)
    return [key] + [f"{stem}-{n}{extension}" for n in range(1, MAX_ALTERNATIVE_KEYS + 1)]


def _header(headers: dict[str, Any], name: str) -> str | None:
    """The SDK hands back response headers as a plain dict, in the server's spelling."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None
