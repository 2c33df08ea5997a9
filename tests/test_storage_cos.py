"""The COS backend, through the real cos-python-sdk-v5, against the loopback COS endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recorder.request import CosLocation
from recorder.settings import RecorderSettings
from recorder.storage import open_storage
from recorder.storage.base import StorageError
from recorder.storage.cos import WRITE_CHECK_NAME, CosStorage
from recorder.storage.credentials import resolve_credentials
from tests.cos_endpoint import CosEndpoint

SECRET_ID = "AKIDstoragetest"
SECRET_KEY = "cos-key-NEVER-SHOW-0b3e"
BUCKET = "rec-1250000000"
REGION = "ap-guangzhou"
MIB = 1024 * 1024


@pytest.fixture
def endpoint() -> Iterator[CosEndpoint]:
    with CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY, bucket=BUCKET, region=REGION) as running:
        yield running


def settings_for(endpoint: CosEndpoint, **changes: Any) -> RecorderSettings:
    options: dict[str, Any] = {
        "storage": "cos",
        "cos_scheme": "http",
        "cos_ip": endpoint.host,
        "cos_port": endpoint.port,
        "cos_request_retries": 2,
        "cos_timeout_seconds": 2.0,
    }
    return RecorderSettings(**(options | changes))


def location(secret_key: str = SECRET_KEY, **changes: Any) -> CosLocation:
    fields = {
        "Region": REGION,
        "Bucket": BUCKET,
        "Path": "/trtc",
        "SecretId": SECRET_ID,
        "SecretKey": secret_key,
    }
    return CosLocation.model_validate(fields | changes)


def storage_for(endpoint: CosEndpoint, secret_key: str = SECRET_KEY, **changes: Any) -> CosStorage:
    place = location(secret_key)
    return CosStorage(place, resolve_credentials(place), settings_for(endpoint, **changes))


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Random bytes: a part mix-up or a dropped byte cannot go unnoticed.
    path.write_bytes(os.urandom(size))
    return path


def operations(endpoint: CosEndpoint, name: str) -> list[int]:
    return [s.status for s in endpoint.seen if _operation(s.method, s.query, s.key) == name]


def _operation(method: str, query: dict[str, str], key: str) -> str:
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        return "InitiateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "GET" and "uploadId" in query:
        return "ListParts"
    return f"{method} {key}"


# --- where objects go ----------------------------------------------------------------


def test_a_small_file_is_one_put_and_the_url_is_the_bucket_url(endpoint: CosEndpoint, tmp_path: Path) -> None:
    source = write(tmp_path / "a.mp3", 300_000)
    url = storage_for(endpoint).store(source, "trtc/1234/anchor_1_20240506T070809Z.mp3")
    assert url == f"https://{BUCKET}.cos.{REGION}.myqcloud.com/trtc/1234/anchor_1_20240506T070809Z.mp3"
    assert endpoint.object("trtc/1234/anchor_1_20240506T070809Z.mp3") == source.read_bytes()
    assert operations(endpoint, "PutObject") == [200]
    assert operations(endpoint, "InitiateMultipartUpload") == []


def test_keys_with_unsafe_characters_reach_cos_as_one_object(endpoint: CosEndpoint, tmp_path: Path) -> None:
    # recording_key percent-encodes room ids; the SDK URL-encodes the key once more on the
    # wire, and COS (here the endpoint) decodes it back to exactly the key we chose.
    key = "trtc/class%207%7CA/%2E%2E/guest_20240506T070809Z.mp4"
    source = write(tmp_path / "b.mp4", 1000)
    url = storage_for(endpoint).store(source, key)
    assert endpoint.keys() == [key]
    assert url.endswith("/trtc/class%25207%257CA/%252E%252E/guest_20240506T070809Z.mp4")


def test_a_100_mb_file_goes_up_in_parallel_parts(endpoint: CosEndpoint, tmp_path: Path) -> None:
    source = write(tmp_path / "big.mp4", 100 * MIB)
    storage = storage_for(endpoint, cos_part_size_mb=8, cos_upload_threads=4)
    storage.store(source, "trtc/big.mp4")
    assert operations(endpoint, "PutObject") == []
    assert operations(endpoint, "InitiateMultipartUpload") == [200]
    assert operations(endpoint, "UploadPart") == [200] * 13  # 12 x 8 MiB + 4 MiB
    assert operations(endpoint, "CompleteMultipartUpload") == [200]
    stored = endpoint.object("trtc/big.mp4")
    assert stored is not None and len(stored) == 100 * MIB
    assert stored == source.read_bytes()
    assert endpoint.pending_uploads() == []
    # The journal of the upload is gone once the object is complete.
    assert [p.name for p in tmp_path.iterdir()] == ["big.mp4"]


def test_an_existing_object_is_never_overwritten(endpoint: CosEndpoint, tmp_path: Path) -> None:
    endpoint.put("trtc/anchor.mp3", b"an earlier recording")
    endpoint.put("trtc/anchor-1.mp3", b"another earlier recording")
    source = write(tmp_path / "a.mp3", 5000)
    url = storage_for(endpoint).store(source, "trtc/anchor.mp3")
    assert url.endswith("/trtc/anchor-2.mp3")
    assert endpoint.object("trtc/anchor.mp3") == b"an earlier recording"
    assert endpoint.object("trtc/anchor-1.mp3") == b"another earlier recording"
    assert endpoint.object("trtc/anchor-2.mp3") == source.read_bytes()


def test_storing_the_same_file_again_finds_it_there(endpoint: CosEndpoint, tmp_path: Path) -> None:
    # A retried upload whose first answer was lost: the object is there, same size and CRC64.
    source = write(tmp_path / "a.mp3", 5000)
    storage = storage_for(endpoint)
    assert storage.store(source, "trtc/a.mp3") == storage.store(source, "trtc/a.mp3")
    assert endpoint.keys() == ["trtc/a.mp3"]
    assert operations(endpoint, "PutObject") == [200]


# --- the network fails ---------------------------------------------------------------


def test_two_503s_then_success(endpoint: CosEndpoint, tmp_path: Path) -> None:
    source = write(tmp_path / "a.mp3", 5000)
    endpoint.fail_next(2, 503, operation="PutObject")
    storage_for(endpoint, cos_request_retries=2).store(source, "trtc/a.mp3")
    assert operations(endpoint, "PutObject") == [503, 503, 200]
    assert endpoint.object("trtc/a.mp3") == source.read_bytes()


def test_a_dropped_connection_and_a_slow_answer_on_parts_are_retried(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    source = write(tmp_path / "a.mp4", 3 * MIB + 17)
    endpoint.drop_next(1, operation="UploadPart")
    endpoint.delay_next(1, 2.0, operation="UploadPart")
    storage_for(endpoint, cos_part_size_mb=1, cos_upload_threads=1, cos_timeout_seconds=0.5).store(
        source, "trtc/a.mp4"
    )
    assert endpoint.object("trtc/a.mp4") == source.read_bytes()
    statuses = operations(endpoint, "UploadPart")
    assert statuses.count(200) >= 4 and 0 in statuses  # four parts, and the drop was seen


def test_a_failed_multipart_upload_resumes_with_the_parts_cos_has(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    source = write(tmp_path / "a.mp4", 5 * MIB)
    storage = storage_for(endpoint, cos_part_size_mb=1, cos_request_retries=0)
    endpoint.fail_next(1, 503, operation="CompleteMultipartUpload")
    with pytest.raises(StorageError, match="503") as caught:
        storage.store(source, "trtc/a.mp4")
    assert not caught.value.permanent
    assert operations(endpoint, "UploadPart") == [200] * 5
    endpoint.seen.clear()

    storage.store(source, "trtc/a.mp4")
    # The second attempt asked COS what it had and sent no part again.
    assert operations(endpoint, "ListParts") == [200]
    assert operations(endpoint, "UploadPart") == []
    assert operations(endpoint, "InitiateMultipartUpload") == []
    assert endpoint.object("trtc/a.mp4") == source.read_bytes()


def test_an_endpoint_that_is_down_is_a_transient_error(endpoint: CosEndpoint, tmp_path: Path) -> None:
    source = write(tmp_path / "a.mp3", 5000)
    endpoint.stop()
    with pytest.raises(StorageError, match="COS did not answer: connection refused") as caught:
        storage_for(endpoint, cos_request_retries=0).store(source, "trtc/a.mp3")
    assert not caught.value.permanent
    assert source.read_bytes()  # the local file is untouched


# --- permanent failures ----------------------------------------------------------------


def test_a_wrong_secret_key_is_refused_at_once_without_showing_it(
    endpoint: CosEndpoint, tmp_path: Path
) -> None:
    wrong = "wrong-key-NEVER-SHOW-a1f0"
    source = write(tmp_path / "a.mp3", 5000)
    with pytest.raises(StorageError) as caught:
        storage_for(endpoint, secret_key=wrong, cos_request_retries=3).store(source, "trtc/a.mp3")
    message = str(caught.value)
    assert message.startswith("COS refused the credentials from the request (403 SignatureDoesNotMatch")
    assert caught.value.permanent
    assert wrong not in message and SECRET_KEY not in message
    # 4xx are not retried: the look for an existing object and the upload, each refused once.
    assert [(s.method, s.status) for s in endpoint.seen] == [("HEAD", 403), ("PUT", 403)]


def test_a_bucket_that_does_not_exist(endpoint: CosEndpoint, tmp_path: Path) -> None:
    place = location(Bucket="missing-1250000000")
    storage = CosStorage(place, resolve_credentials(place), settings_for(endpoint))
    with pytest.raises(StorageError, match="bucket missing-1250000000 does not exist in region ap-guangzhou"):
        storage.check_writable()


# --- the early check -------------------------------------------------------------------


def test_check_writable_leaves_nothing_behind(endpoint: CosEndpoint) -> None:
    storage_for(endpoint).check_writable()
    assert endpoint.keys() == []
    assert [s.key for s in endpoint.seen] == [f"trtc/{WRITE_CHECK_NAME}"] * 2  # put, then delete


def test_check_writable_with_a_wrong_key(endpoint: CosEndpoint) -> None:
    with pytest.raises(StorageError, match="SignatureDoesNotMatch") as caught:
        storage_for(endpoint, secret_key="not-the-key").check_writable()
    assert caught.value.permanent


# --- credentials from the environment ---------------------------------------------------


def test_temporary_credentials_from_the_environment(
    endpoint: CosEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint.secret_id, endpoint.secret_key, endpoint.token = "AKIDtemporary", "tmp-key-0d9c", "token-5e21"
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", "AKIDtemporary")
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", "tmp-key-0d9c")
    monkeypatch.setenv("TENCENTCLOUD_SESSIONTOKEN", "token-5e21")
    place = CosLocation(Region=REGION, Bucket=BUCKET, Path="/trtc")
    storage = open_storage(settings_for(endpoint), place)
    source = write(tmp_path / "a.mp3", 5000)
    storage.store(source, "trtc/a.mp3")
    assert endpoint.object("trtc/a.mp3") == source.read_bytes()

    monkeypatch.setenv("TENCENTCLOUD_SESSIONTOKEN", "an-expired-token")
    with pytest.raises(StorageError, match=r"from the environment .*InvalidToken") as caught:
        open_storage(settings_for(endpoint), place).check_writable()
    assert "an-expired-token" not in str(caught.value) and "tmp-key-0d9c" not in str(caught.value)


def test_the_local_default_needs_no_account(tmp_path: Path) -> None:
    settings = RecorderSettings(storage_dir=tmp_path / "recordings")
    storage = open_storage(settings, CosLocation(Region=REGION, Bucket=BUCKET))
    storage.check_writable()
    assert type(storage).__name__ == "LocalStorage"
