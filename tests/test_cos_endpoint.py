"""The loopback COS endpoint is a faithful stand-in: everything here goes through the real SDK
(cos-python-sdk-v5), which signs, retries and parses exactly as it does against Tencent COS."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from qcloud_cos import CosConfig, CosS3Client  # type: ignore[import-untyped]
from qcloud_cos.cos_exception import CosClientError, CosServiceError  # type: ignore[import-untyped]

from tests.cos_endpoint import CRC64, CosEndpoint

SECRET_ID = "AKIDloopbacktest0000000000000000"
SECRET_KEY = "loopback-secret-key-0000000000000"
MIB = 1024 * 1024


@pytest.fixture
def endpoint() -> Iterator[CosEndpoint]:
    with CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY) as cos:
        yield cos


def client(
    cos: CosEndpoint,
    *,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    token: str | None = None,
    region: str | None = None,
    retry: int = 1,
    timeout: float = 5,
) -> CosS3Client:
    conf = CosConfig(
        Region=region or cos.region,
        SecretId=secret_id,
        SecretKey=secret_key,
        Token=token,
        Timeout=timeout,
        **cos.sdk_options(),
    )
    return CosS3Client(conf, retry=retry)


def service_error(excinfo: pytest.ExceptionInfo[CosServiceError]) -> tuple[int, str]:
    return int(excinfo.value.get_status_code()), str(excinfo.value.get_error_code())


def statuses(cos: CosEndpoint, operation: str) -> list[int]:
    return [seen.status for seen in cos.seen if seen.operation == operation]


def quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


# --- objects ----------------------------------------------------------------------------------


def test_crc64_known_answer() -> None:
    assert CRC64(b"123456789") == 0x995DC9BBDF1939FA
    assert CRC64(b"456789", CRC64(b"123")) == CRC64(b"123456789")  # continues a running CRC


def test_put_get_head_round_trip(endpoint: CosEndpoint) -> None:
    cos = client(endpoint)
    data = os.urandom(100_000)
    put = cos.put_object(Bucket=endpoint.bucket, Body=data, Key="rec/a.mp4", ContentType="video/mp4")
    assert put["ETag"] == quoted_md5(data)
    assert int(put["x-cos-hash-crc64ecma"]) == CRC64(data)
    assert put["x-cos-request-id"]
    assert endpoint.object("rec/a.mp4") == data

    got = cos.get_object(Bucket=endpoint.bucket, Key="rec/a.mp4")
    assert got["Body"].get_raw_stream().read() == data
    assert int(got["x-cos-hash-crc64ecma"]) == CRC64(data)

    head = cos.head_object(Bucket=endpoint.bucket, Key="rec/a.mp4")
    assert int(head["Content-Length"]) == len(data)
    assert head["ETag"] == quoted_md5(data)
    assert head["Content-Type"] == "video/mp4"
    assert head["Last-Modified"].endswith("GMT")
    assert int(head["x-cos-hash-crc64ecma"]) == CRC64(data)

    part = cos.get_object(Bucket=endpoint.bucket, Key="rec/a.mp4", Range="bytes=10-19")
    assert part["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert part["Body"].get_raw_stream().read() == data[10:20]
    assert [s.operation for s in endpoint.seen] == ["PutObject", "GetObject", "HeadObject", "GetObject"]
    assert [s.status for s in endpoint.seen] == [200, 200, 200, 206]


def test_content_md5_is_checked(endpoint: CosEndpoint) -> None:
    cos = client(endpoint)
    cos.put_object(Bucket=endpoint.bucket, Body=b"checked", Key="k", EnableMD5=True)
    assert endpoint.object("k") == b"checked"
    with pytest.raises(CosServiceError) as excinfo:
        cos.put_object(Bucket=endpoint.bucket, Body=b"other", Key="k", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert service_error(excinfo) == (400, "BadDigest")
    assert endpoint.object("k") == b"checked"


def test_missing_object_and_delete(endpoint: CosEndpoint) -> None:
    cos = client(endpoint)
    with pytest.raises(CosServiceError) as head:
        cos.head_object(Bucket=endpoint.bucket, Key="nothing.mp4")
    assert head.value.get_status_code() == 404  # no body on HEAD: the SDK names it NoSuchResource
    with pytest.raises(CosServiceError) as get:
        cos.get_object(Bucket=endpoint.bucket, Key="nothing.mp4")
    assert service_error(get) == (404, "NoSuchKey")
    assert cos.object_exists(Bucket=endpoint.bucket, Key="nothing.mp4") is False

    endpoint.put("seeded.mp4", b"already here")
    assert cos.object_exists(Bucket=endpoint.bucket, Key="seeded.mp4") is True
    cos.delete_object(Bucket=endpoint.bucket, Key="seeded.mp4")
    assert endpoint.keys() == []
    cos.delete_object(Bucket=endpoint.bucket, Key="seeded.mp4")  # deleting nothing is not an error
    assert endpoint.seen[-1].status == 204


@pytest.mark.parametrize(
    "key",
    [
        "dir with spaces/a b.mp4",
        "录制/房间 1/主播.mp4",
        "a+b=c&d.mp4",
        "100%/%41%2F.mp4",
        "what?.mp4",
        "hash#tag.mp4",
        "all of ?#+%~ 文件/./x.mp4",
    ],
)
def test_awkward_keys_round_trip(endpoint: CosEndpoint, key: str) -> None:
    cos = client(endpoint)
    cos.put_object(Bucket=endpoint.bucket, Body=b"payload", Key=key)
    assert endpoint.keys() == [key]
    assert endpoint.seen[-1].key == key
    assert cos.get_object(Bucket=endpoint.bucket, Key=key)["Body"].get_raw_stream().read() == b"payload"
    # The key as a signed query parameter too (prefix), listed back url-encoded and decoded by the SDK.
    listed = cos.list_objects(Bucket=endpoint.bucket, Prefix=key)
    assert [c["Key"] for c in listed["Contents"]] == [key]
    upload_id = cos.create_multipart_upload(Bucket=endpoint.bucket, Key=key)["UploadId"]
    uploads = cos.list_multipart_uploads(Bucket=endpoint.bucket, Prefix=key)
    assert [(u["Key"], u["UploadId"]) for u in uploads["Upload"]] == [(key, upload_id)]


# --- multipart --------------------------------------------------------------------------------


def test_multipart_upload_assembles_parts(endpoint: CosEndpoint) -> None:
    cos = client(endpoint)
    parts = [os.urandom(MIB), os.urandom(MIB), os.urandom(MIB // 2 + 123)]
    key = "rec/multi part.mp4"
    upload_id = cos.create_multipart_upload(Bucket=endpoint.bucket, Key=key)["UploadId"]
    assert endpoint.pending_uploads() == [upload_id]

    etags = []
    for number, data in enumerate(parts, start=1):
        answer = cos.upload_part(
            Bucket=endpoint.bucket, Key=key, Body=data, PartNumber=number, UploadId=upload_id
        )
        assert answer["ETag"] == quoted_md5(data)
        etags.append(answer["ETag"])

    listed = cos.list_parts(Bucket=endpoint.bucket, Key=key, UploadId=upload_id)
    assert listed["Key"] == key  # sent url-encoded, decoded by the SDK
    assert listed["IsTruncated"] == "false"
    assert [(int(p["PartNumber"]), p["ETag"], int(p["Size"])) for p in listed["Part"]] == [
        (n, etags[n - 1], len(parts[n - 1])) for n in (1, 2, 3)
    ]
    uploads = cos.list_multipart_uploads(Bucket=endpoint.bucket, Prefix="rec/")
    assert [(u["Key"], u["UploadId"]) for u in uploads["Upload"]] == [(key, upload_id)]
    assert cos.list_multipart_uploads(Bucket=endpoint.bucket, Prefix="other/").get("Upload", []) == []

    done = cos.complete_multipart_upload(
        Bucket=endpoint.bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Part": [{"PartNumber": n, "ETag": etags[n - 1]} for n in (1, 2, 3)]},
    )
    whole = b"".join(parts)
    binary_md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"] == f'"{hashlib.md5(binary_md5s).hexdigest()}-3"'
    assert int(done["x-cos-hash-crc64ecma"]) == CRC64(whole)
    assert endpoint.object(key) == whole
    assert endpoint.pending_uploads() == []
    head = cos.head_object(Bucket=endpoint.bucket, Key=key)
    assert int(head["x-cos-hash-crc64ecma"]) == CRC64(whole)
    assert int(head["Content-Length"]) == len(whole)


def test_complete_checks_parts(endpoint: CosEndpoint) -> None:
    cos = client(endpoint)
    upload_id = cos.create_multipart_upload(Bucket=endpoint.bucket, Key="k")["UploadId"]
    small = [b"a" * 1000, b"b" * 1000]
    etags = [
        cos.upload_part(Bucket=endpoint.bucket, Key="k", Body=d, PartNumber=n, UploadId=upload_id)["ETag"]
        for n, d in enumerate(small, start=1)
    ]

    def complete(parts: list[dict[str, object]]) -> tuple[int, str]:
        with pytest.raises(CosServiceError) as excinfo:
            cos.complete_multipart_upload(
                Bucket=endpoint.bucket, Key="k", UploadId=upload_id, MultipartUpload={"Part": parts}
            )
        return service_error(excinfo)

    assert complete([{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}]) == (
        400,
        "EntityTooSmall",
    )
    assert complete([{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]) == (
        400,
        "InvalidPartOrder",
    )
    assert complete([{"PartNumber": 1, "ETag": etags[1]}]) == (400, "InvalidPart")
    assert complete([{"PartNumber": 3, "ETag": etags[0]}]) == (400, "InvalidPart")
    assert endpoint.pending_uploads() == [upload_id]  # a refused completion leaves the upload open

    # A single (last) part may be small.
    cos.complete_multipart_upload(
        Bucket=endpoint.bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Part": [{"PartNumber": 1, "ETag": etags[0]}]},
    )
    assert endpoint.object("k") == small[0]
    with pytest.raises(CosServiceError) as again:
        cos.upload_part(Bucket=endpoint.bucket, Key="k", Body=b"x", PartNumber=2, UploadId=upload_id)
    assert service_error(again) == (404, "NoSuchUpload")


def test_abort_removes_pending_upload(endpoint: CosEndpoint) -> None:
    cos = client(endpoint)
    upload_id = cos.create_multipart_upload(Bucket=endpoint.bucket, Key="k")["UploadId"]
    cos.upload_part(Bucket=endpoint.bucket, Key="k", Body=b"x", PartNumber=1, UploadId=upload_id)
    assert endpoint.pending_uploads() == [upload_id]
    cos.abort_multipart_upload(Bucket=endpoint.bucket, Key="k", UploadId=upload_id)
    assert endpoint.seen[-1].status == 204
    assert endpoint.pending_uploads() == []
    assert endpoint.keys() == []
    for call in (
        lambda: cos.abort_multipart_upload(Bucket=endpoint.bucket, Key="k", UploadId=upload_id),
        lambda: cos.list_parts(Bucket=endpoint.bucket, Key="k", UploadId=upload_id),
        lambda: cos.upload_part(Bucket=endpoint.bucket, Key="k", Body=b"x", PartNumber=1, UploadId="nope"),
    ):
        with pytest.raises(CosServiceError) as excinfo:
            call()
        assert service_error(excinfo) == (404, "NoSuchUpload")


def test_sdk_upload_file_resumes_with_matching_etags(endpoint: CosEndpoint, tmp_path: Path) -> None:
    """upload_file lists pending uploads and compares part ETags with its own '"md5"': a part already
    uploaded is not sent again only if this endpoint lists uploads and parts as COS does."""
    data = os.urandom(3 * MIB + 4567)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    cos = client(endpoint)
    upload_id = cos.create_multipart_upload(Bucket=endpoint.bucket, Key="big.bin")["UploadId"]
    cos.upload_part(Bucket=endpoint.bucket, Key="big.bin", Body=data[:MIB], PartNumber=1, UploadId=upload_id)

    done = cos.upload_file(Bucket=endpoint.bucket, Key="big.bin", LocalFilePath=str(source), MAXThread=4)
    assert int(done["x-cos-hash-crc64ecma"]) == CRC64(data)
    assert endpoint.object("big.bin") == data
    assert endpoint.pending_uploads() == []
    uploaded = sorted(int(s.query["partNumber"]) for s in endpoint.seen if s.operation == "UploadPart")
    assert uploaded == [1, 2, 3, 4]  # part 1 once (by hand), then only 2..4 by upload_file
    assert statuses(endpoint, "InitiateMultipartUpload") == [200]


# --- authentication ---------------------------------------------------------------------------


def test_wrong_secret_key_is_refused(endpoint: CosEndpoint) -> None:
    wrong_key = "not-the-secret-key-000000000000000"
    with pytest.raises(CosServiceError) as excinfo:
        client(endpoint, secret_key=wrong_key).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(excinfo) == (403, "SignatureDoesNotMatch")
    assert endpoint.keys() == []
    text = f"{excinfo.value} {excinfo.value.get_origin_msg()}"
    assert SECRET_KEY not in text
    assert wrong_key not in text


def test_wrong_secret_id_is_refused(endpoint: CosEndpoint) -> None:
    with pytest.raises(CosServiceError) as excinfo:
        client(endpoint, secret_id="AKIDsomeoneelse").put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(excinfo) == (403, "InvalidAccessKeyId")


def test_rotated_keys_apply_to_the_next_request(endpoint: CosEndpoint) -> None:
    client(endpoint).put_object(Bucket=endpoint.bucket, Body=b"x", Key="before")
    endpoint.secret_id, endpoint.secret_key = "AKIDrotated", "rotated-key"
    with pytest.raises(CosServiceError) as excinfo:
        client(endpoint).put_object(Bucket=endpoint.bucket, Body=b"x", Key="after")
    assert service_error(excinfo) == (403, "InvalidAccessKeyId")
    client(endpoint, secret_id="AKIDrotated", secret_key="rotated-key").put_object(
        Bucket=endpoint.bucket, Body=b"x", Key="after"
    )
    assert endpoint.keys() == ["after", "before"]


def test_token_is_required_and_checked(endpoint: CosEndpoint) -> None:
    endpoint.token = "session-token-1"
    with pytest.raises(CosServiceError) as missing:
        client(endpoint).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(missing) == (403, "AccessDenied")
    with pytest.raises(CosServiceError) as wrong:
        client(endpoint, token="session-token-2").put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(wrong) == (403, "InvalidToken")
    assert "session-token-1" not in str(wrong.value)
    assert endpoint.keys() == []
    client(endpoint, token="session-token-1").put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert endpoint.keys() == ["k"]


def test_signature_time_window(endpoint: CosEndpoint) -> None:
    """The SDK signs [now-60, now+10000]: a server clock outside that window refuses the request."""
    cos = client(endpoint, retry=0)
    endpoint.clock_offset = 20_000
    with pytest.raises(CosServiceError) as expired:
        cos.put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(expired) == (403, "AccessDenied")
    endpoint.clock_offset = -120
    with pytest.raises(CosServiceError) as early:
        cos.put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(early) == (403, "RequestTimeTooSkewed")
    endpoint.clock_offset = 0
    cos.put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")


def test_other_bucket_or_region_is_no_such_bucket(endpoint: CosEndpoint) -> None:
    with pytest.raises(CosServiceError) as bucket:
        client(endpoint).put_object(Bucket="other-1250000000", Body=b"x", Key="k")
    assert service_error(bucket) == (404, "NoSuchBucket")
    with pytest.raises(CosServiceError) as region:
        client(endpoint, region="ap-beijing").put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(region) == (404, "NoSuchBucket")
    client(endpoint).head_bucket(Bucket=endpoint.bucket)
    assert endpoint.keys() == []


def test_tampered_requests_are_refused(endpoint: CosEndpoint) -> None:
    """A signature made for one request does not carry over to another (path, host, missing)."""
    cos = client(endpoint)
    host = f"{endpoint.bucket}.cos.{endpoint.region}.myqcloud.com"
    auth = cos.get_auth(Method="PUT", Bucket=endpoint.bucket, Key="signed.txt", Headers={"Host": host})
    base = f"http://{endpoint.host}:{endpoint.port}"

    def put(path: str, headers: dict[str, str]) -> requests.Response:
        return requests.put(f"{base}/{path}", data=b"x", headers=headers, timeout=5)

    other_path = put("other.txt", {"Host": host, "Authorization": auth})
    assert (other_path.status_code, "<Code>SignatureDoesNotMatch</Code>" in other_path.text) == (403, True)
    other_host = put("signed.txt", {"Host": host.replace("test-", "tes-"), "Authorization": auth})
    assert other_host.status_code == 404  # another bucket's name: refused before the signature
    unsigned = put("signed.txt", {"Host": host})
    assert (unsigned.status_code, "<Code>AccessDenied</Code>" in unsigned.text) == (403, True)
    assert unsigned.headers["Content-Type"] == "application/xml"
    assert unsigned.headers["x-cos-request-id"] in unsigned.text
    no_host = cos.get_auth(Method="PUT", Bucket=endpoint.bucket, Key="signed.txt", SignHost=False)
    assert put("signed.txt", {"Host": host, "Authorization": no_host}).status_code == 403
    assert endpoint.keys() == []

    assert put("signed.txt", {"Host": host, "Authorization": auth}).status_code == 200
    assert endpoint.object("signed.txt") == b"x"


# --- faults -----------------------------------------------------------------------------------


def test_fail_next_is_retried_by_the_sdk(endpoint: CosEndpoint) -> None:
    endpoint.fail_next(2, operation="PutObject")
    cos = client(endpoint, retry=2)
    cos.head_bucket(Bucket=endpoint.bucket)  # another operation: not affected
    cos.put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert statuses(endpoint, "PutObject") == [503, 503, 200]
    assert endpoint.object("k") == b"x"


def test_fail_next_without_retries_surfaces_the_code(endpoint: CosEndpoint) -> None:
    endpoint.fail_next(1, status=500, code="InternalError")
    with pytest.raises(CosServiceError) as excinfo:
        client(endpoint, retry=0).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(excinfo) == (500, "InternalError")
    endpoint.fail_next(1, status=429, code="SlowDown")
    with pytest.raises(CosServiceError) as slow:  # 4xx: the SDK does not retry, whatever its retry count
        client(endpoint, retry=3).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert service_error(slow) == (429, "SlowDown")
    assert endpoint.keys() == []


def test_drop_next(endpoint: CosEndpoint) -> None:
    endpoint.drop_next(1, operation="PutObject")
    with pytest.raises(CosClientError):
        client(endpoint, retry=0).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert endpoint.keys() == []  # a dropped request has no effect
    endpoint.drop_next(1, operation="PutObject")
    client(endpoint, retry=1).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
    assert statuses(endpoint, "PutObject") == [0, 0, 200]
    assert endpoint.object("k") == b"x"


def test_delay_beyond_the_sdk_timeout(endpoint: CosEndpoint) -> None:
    endpoint.delay_next(1, 1.0, operation="PutObject")
    started = time.monotonic()
    with pytest.raises(CosClientError):
        client(endpoint, retry=0, timeout=0.3).put_object(Bucket=endpoint.bucket, Body=b"late", Key="k")
    assert time.monotonic() - started < 0.9
    # The endpoint still answers after the delay, so the write lands though the client gave up.
    deadline = time.monotonic() + 3
    while endpoint.object("k") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert endpoint.object("k") == b"late"
    endpoint.delay_next(1, 0.1)
    client(endpoint, retry=0, timeout=2).put_object(Bucket=endpoint.bucket, Body=b"on time", Key="k")
    assert endpoint.object("k") == b"on time"


def test_stop_then_start_on_the_same_port(endpoint: CosEndpoint) -> None:
    cos = client(endpoint, retry=0)
    cos.put_object(Bucket=endpoint.bucket, Body=b"1", Key="one")  # leaves a kept-alive connection
    port = endpoint.port
    endpoint.stop()
    with pytest.raises(CosClientError) as excinfo:
        cos.put_object(Bucket=endpoint.bucket, Body=b"2", Key="two")
    assert "refused" in str(excinfo.value).lower()
    endpoint.start()
    assert endpoint.port == port
    cos.put_object(Bucket=endpoint.bucket, Body=b"2", Key="two")
    assert endpoint.keys() == ["one", "two"]  # what was stored survives the outage


def test_stop_does_not_wait_for_a_delayed_answer(endpoint: CosEndpoint) -> None:
    endpoint.delay_next(1, 30)
    errors: list[BaseException] = []

    def slow_put() -> None:
        try:
            client(endpoint, retry=0, timeout=10).put_object(Bucket=endpoint.bucket, Body=b"x", Key="k")
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=slow_put)
    thread.start()
    time.sleep(0.5)  # the request is in, being delayed (it is recorded only once answered or dropped)
    started = time.monotonic()
    endpoint.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=5)
    assert [type(e) for e in errors] == [CosClientError]
    assert endpoint.keys() == []


def test_unknown_fault_operation_is_a_typo() -> None:
    cos = CosEndpoint(secret_id=SECRET_ID, secret_key=SECRET_KEY)
    with pytest.raises(ValueError, match="unknown operation"):
        cos.fail_next(1, operation="PutObjects")
