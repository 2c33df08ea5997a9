"""CosLiveUpload: a file stored to COS while it is written, against the loopback endpoint."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.storage.cos import CosStorage
from recorder.storage.cos_live import CosLiveUpload
from tests.cos_endpoint import CosEndpoint
from tests.test_storage_cos import BUCKET, REGION, SECRET_ID, SECRET_KEY, operations, storage_for

MIB = 1024 * 1024


@pytest.fixture
def endpoint() -> Iterator[CosEndpoint]:
    with CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as running:
        yield running


def _storage(endpoint: CosEndpoint) -> CosStorage:
    return storage_for(endpoint, cos_part_size_mb=1)


def _write_like_a_muxer(upload: CosLiveUpload, body: bytes) -> bytes:
    """Header, body in uneven chunks, then back to the header's size field and on to the
    end: how FFmpeg's MP4 and MP3 muxers write. Returns the bytes the file must hold."""
    header = b"\x00\x00\x00\x00size-to-patch"
    upload.write(header)
    for start in range(0, len(body), 32_768 + 17):
        upload.write(body[start : start + 32_768 + 17])
    end = upload.tell()
    upload.seek(0)
    upload.write(b"\x00\x00\x10\x00")
    upload.seek(end)
    upload.write(b"trailer")
    return b"\x00\x00\x10\x00size-to-patch" + body + b"trailer"


def _spool_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_parts_go_up_while_the_file_is_written_and_the_head_last(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    upload = _storage(endpoint).open_live("trtc/room/live.mp4", tmp_path)
    body = os.urandom(int(3.5 * MIB))
    expected = _write_like_a_muxer(upload, body)
    # Parts 2 and 3 are whole and went up while writing; the head (part 1) waits for the end.
    for _ in range(200):  # bounded: 10 s
        if operations(endpoint, "UploadPart").count(200) >= 2:
            break
        time.sleep(0.05)
    assert operations(endpoint, "UploadPart") == [200, 200]
    assert endpoint.keys() == []  # nothing visible before it is complete

    url = upload.finish()

    assert url == f"https://{BUCKET}.cos.{REGION}.myqcloud.com/trtc/room/live.mp4"
    assert endpoint.object("trtc/room/live.mp4") == expected
    parts = [s.query["partNumber"] for s in endpoint.seen if s.operation == "UploadPart"]
    assert parts == ["2", "3", "4", "1"]  # the head, patched at the end, goes last
    assert endpoint.pending_uploads() == []
    assert _spool_files(tmp_path) == []  # every spool file is gone


def test_a_small_file_is_one_put(endpoint: CosEndpoint, tmp_path: Path) -> None:
    upload = _storage(endpoint).open_live("trtc/room/short.mp3", tmp_path)
    expected = _write_like_a_muxer(upload, os.urandom(200_000))
    upload.finish()
    assert endpoint.object("trtc/room/short.mp3") == expected
    assert operations(endpoint, "UploadPart") == [] and operations(endpoint, "PutObject") == [200]
    assert _spool_files(tmp_path) == []


def test_an_existing_object_is_not_written_over(endpoint: CosEndpoint, tmp_path: Path) -> None:
    endpoint.put("trtc/room/taken.mp4", b"someone else's")
    upload = _storage(endpoint).open_live("trtc/room/taken.mp4", tmp_path)
    upload.write(b"ours")
    assert upload.finish().endswith("/trtc/room/taken-1.mp4")
    assert endpoint.object("trtc/room/taken.mp4") == b"someone else's"
    assert endpoint.object("trtc/room/taken-1.mp4") == b"ours"


def test_writing_into_a_part_already_sent_fails_and_abort_leaves_nothing(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    upload = _storage(endpoint).open_live("trtc/room/rewrite.mp4", tmp_path)
    upload.write(os.urandom(int(2.5 * MIB)))
    upload.seek(int(1.5 * MIB))  # inside part 2, which is whole and queued
    with pytest.raises(OSError, match="part 2 is already stored"):
        upload.write(b"x")
    upload.abort()
    assert endpoint.keys() == [] and endpoint.pending_uploads() == []
    assert _spool_files(tmp_path) == []


def test_a_refused_part_fails_the_file_and_nothing_is_left_behind(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    endpoint.fail_next(1, 403, "AccessDenied", operation="UploadPart")
    upload = _storage(endpoint).open_live("trtc/room/refused.mp4", tmp_path)
    upload.write(os.urandom(int(2.5 * MIB)))
    with pytest.raises(OSError, match="storing to COS while recording failed"):
        upload.finish()
    assert endpoint.keys() == [] and endpoint.pending_uploads() == []
    assert _spool_files(tmp_path) == []
