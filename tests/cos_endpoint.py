"""A COS-compatible endpoint on loopback for tests: the XML API as cos-python-sdk-v5 speaks it.

Objects live in memory. Every request's signature is checked as COS checks it, so a test that
passes here has signed its requests correctly; faults (error answers, slow answers, dropped
connections) can be injected per operation. Typical use:

    with CosEndpoint(secret_id="AKID...", secret_key="...") as cos:
        conf = CosConfig(Region=cos.region, SecretId=..., SecretKey=..., **cos.sdk_options())
        cos.fail_next(1, operation="UploadPart")   # the next UploadPart answers 503
        cos.go_down_for(60)                        # nothing listens for a minute, then all is back
        ...
        assert cos.object("some/key") == expected

A fault is taken before the request is routed or authenticated (it stands for the network or
COS's front end); each request takes at most one, the oldest that matches its operation.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import itertools
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from socketserver import BaseRequestHandler
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.etree import ElementTree

import crcmod  # type: ignore[import-untyped]

from tests.loopback_server import LoopbackHTTPServer

# CRC-64/ECMA as COS computes it for x-cos-hash-crc64ecma. `CRC64(more, CRC64(first))` continues a CRC.
CRC64: Callable[..., int] = crcmod.mkCrcFun(
    0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True
)

MIN_PART_SIZE = 1024 * 1024  # every part but the last, as COS enforces at CompleteMultipartUpload
OPERATIONS = (
    "PutObject",
    "InitiateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
    "HeadObject",
    "GetObject",
    "DeleteObject",
    "HeadBucket",
    "ListObjects",
)
# Sub-resources this endpoint does not serve: answering them as plain object requests would mislead.
_UNSUPPORTED_SUBRESOURCES = frozenset(
    {
        "acl",
        "append",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "policy",
        "restore",
        "select",
        "symlink",
        "tagging",
        "versioning",
        "versions",
    }
)
_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9-]+)\.cos(?:-internal)?\.(?P<region>[a-z0-9-]+)\.(?:myqcloud\.com|tencentcos\.cn)$"
)
_AUTH_FIELDS = (
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
)
_SAFE = "-_.~"


@dataclass
class Seen:
    """One request the endpoint received (for assertions)."""

    method: str
    key: str  # without the leading '/', URL-decoded; '' for bucket-level requests
    query: dict[str, str]
    status: int  # the status sent, or 0 if the connection was dropped
    operation: str = ""
    at: float = field(default_factory=time.monotonic)  # when its body was in (time.monotonic)


@dataclass
class _Object:
    data: bytes
    etag: str  # with the quotes, as COS sends it
    crc64: int
    modified: float
    headers: dict[str, str]  # Content-Type and x-cos-meta-*, given back on HEAD/GET


@dataclass
class _Part:
    data: bytes
    etag: str
    modified: float


@dataclass
class _Upload:
    key: str
    upload_id: str
    initiated: float
    headers: dict[str, str]
    parts: dict[int, _Part] = field(default_factory=dict)


@dataclass
class _Fault:
    kind: str  # "fail", "delay" or "drop"
    remaining: int
    operation: str | None
    status: int = 503
    code: str = "ServiceUnavailable"
    seconds: float = 0.0


class _CosError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class CosEndpoint:
    """Serves one bucket on 127.0.0.1. secret_id/secret_key/token may be reassigned at any time
    (key rotation); the next request is checked against the new values."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        bucket: str = "test-1250000000",
        region: str = "ap-guangzhou",
        token: str | None = None,
        port: int = 0,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.token = token
        self.bucket = bucket
        self.region = region
        # Seconds added to this endpoint's clock when checking q-sign-time (simulates clock skew).
        self.clock_offset = 0.0
        # Bytes per second each connection may send a body at (None: as fast as loopback
        # goes). A link to COS over the internet is limited per connection by its round
        # trip, which is what parallel parts are for; benchmarks set this to show it.
        self.link_bytes_per_second: float | None = None
        self.seen: list[Seen] = []
        # The port is fixed now, so sdk_options() works before start() and survives a restart.
        self.port = port or _free_port(self.host)
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}
        self._uploads: dict[str, _Upload] = {}
        self._faults: list[_Fault] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # start/stop/outages, one at a time (a timer brings the endpoint back after an outage).
        self._lifecycle = threading.RLock()
        self._comeback: threading.Timer | None = None
        # The last outage (time.monotonic): when the endpoint went down and came back.
        self.went_down: float | None = None
        self.came_back: float | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> CosEndpoint:
        with self._lifecycle:
            self._listen()
        return self

    def stop(self) -> None:
        """Stop serving; an outage's pending return is called off (nothing listens afterwards)."""
        with self._lifecycle:
            comeback, self._comeback = self._comeback, None
            if comeback is not None:
                comeback.cancel()
            self._stop_listening()

    def go_down_for(self, seconds: float) -> None:
        """An outage: stop listening now (new connections are refused, open ones are cut, as
        when a host or its network goes away) and serve again `seconds` later on the same port,
        with the objects and unfinished multipart uploads as they were."""
        with self._lifecycle:
            if self._server is None:
                # Stopped for good (or never started): it must not come back by itself.
                raise RuntimeError("the endpoint is not serving")
            self._stop_listening()
            self.went_down, self.came_back = time.monotonic(), None
            self._comeback = threading.Timer(seconds, self._come_back)
            self._comeback.daemon = True
            self._comeback.start()

    def _come_back(self) -> None:
        with self._lifecycle:
            if self._comeback is None:
                return  # stop() called it off
            self._comeback = None
            self._listen()
            self.came_back = time.monotonic()

    def _listen(self) -> None:
        if self._server is not None:
            return
        # The port was ours a moment ago; a connection of another program may hold it briefly
        # (an ephemeral port), so binding is tried again for a few seconds.
        for attempt in itertools.count():
            try:
                server = _Server((self.host, self.port), _Handler, self)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt >= 50:
                    raise
                time.sleep(0.1)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cos-endpoint", daemon=True
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        # Kept-alive connections would otherwise go on being served after stop().
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CosEndpoint:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def sdk_options(self) -> dict[str, object]:
        """Keyword arguments for qcloud_cos.CosConfig that point the SDK here."""
        return {"IP": self.host, "Port": self.port, "Scheme": "http"}

    # --- state for tests -----------------------------------------------------------------

    def object(self, key: str) -> bytes | None:
        with self._lock:
            found = self._objects.get(key)
        return None if found is None else found.data

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    def clear(self) -> None:
        """Forget every object, every upload and what was seen (a benchmark's next round)."""
        with self._lock:
            self._objects.clear()
            self._uploads.clear()
            self.seen.clear()

    def put(self, key: str, data: bytes) -> None:
        """Seed an object as if it had been uploaded earlier."""
        stored = _new_object(bytes(data), {})
        with self._lock:
            self._objects[key] = stored

    def pending_uploads(self) -> list[str]:
        """Upload ids of multipart uploads neither completed nor aborted, oldest first."""
        with self._lock:
            return [u.upload_id for u in sorted(self._uploads.values(), key=lambda u: u.initiated)]

    # --- faults --------------------------------------------------------------------------

    def fail_next(
        self, count: int, status: int = 503, code: str = "ServiceUnavailable", operation: str | None = None
    ) -> None:
        self._add_fault(_Fault("fail", count, operation, status=status, code=code))

    def delay_next(self, count: int, seconds: float, operation: str | None = None) -> None:
        """Sleep before answering, then answer normally (the request still takes effect)."""
        self._add_fault(_Fault("delay", count, operation, seconds=seconds))

    def drop_next(self, count: int, operation: str | None = None) -> None:
        """Read the request, then close the connection without answering (no effect)."""
        self._add_fault(_Fault("drop", count, operation))

    def _add_fault(self, fault: _Fault) -> None:
        if fault.operation is not None and fault.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {fault.operation!r}; one of {', '.join(OPERATIONS)}")
        if fault.remaining > 0:
            with self._lock:
                self._faults.append(fault)

    def _take_fault(self, operation: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation is None or fault.operation == operation:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    # --- authentication ------------------------------------------------------------------

    def _authenticate(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> None:
        """Recompute the q-signature as COS does; raise _CosError (never quoting a secret) if it fails."""
        authorization = headers.get("authorization", "")
        fields: dict[str, str] = {}
        for item in authorization.split("&"):
            name, sep, value = item.partition("=")
            if sep:
                fields[name] = value
        if any(name not in fields for name in _AUTH_FIELDS) or fields["q-sign-algorithm"] != "sha1":
            raise _CosError(403, "AccessDenied", "The Authorization header is missing or malformed.")
        if fields["q-ak"] != self.secret_id:
            raise _CosError(403, "InvalidAccessKeyId", "The SecretId does not exist.")
        try:
            start, end = (int(v) for v in fields["q-sign-time"].split(";"))
        except ValueError:
            raise _CosError(403, "AccessDenied", "q-sign-time is malformed.") from None
        now = time.time() + self.clock_offset
        if now > end:
            raise _CosError(403, "AccessDenied", "Request has expired.")
        if now < start:
            raise _CosError(403, "RequestTimeTooSkewed", "The request time is too far from the server time.")

        header_names = [n for n in fields["q-header-list"].split(";") if n]
        if "host" not in header_names:
            raise _CosError(403, "AccessDenied", "The Host header must be signed.")
        if self.token is not None:
            sent = headers.get("x-cos-security-token")
            if sent is None or "x-cos-security-token" not in header_names:
                raise _CosError(403, "AccessDenied", "The request must carry a signed x-cos-security-token.")
            if not hmac.compare_digest(sent.encode(), self.token.encode()):
                raise _CosError(403, "InvalidToken", "The provided token is invalid.")

        # http.server decodes header bytes as latin-1; re-encode to quote the bytes the client sent.
        signed_headers = "&".join(
            f"{name}={quote(headers.get(name, '').encode('latin-1', 'replace'), safe=_SAFE)}"
            for name in sorted(header_names)
        )
        params = {quote(k.encode(), safe=_SAFE).lower(): quote(v.encode(), safe=_SAFE) for k, v in query}
        param_names = [n for n in fields["q-url-param-list"].split(";") if n]
        signed_params = "&".join(f"{name}={params.get(name, '')}" for name in sorted(param_names))
        canonical = f"{method.lower()}\n{path}\n{signed_params}\n{signed_headers}\n"
        digest = hashlib.sha1(canonical.encode()).hexdigest()
        string_to_sign = f"sha1\n{fields['q-sign-time']}\n{digest}\n"
        sign_key = hmac.new(self.secret_key.encode(), fields["q-key-time"].encode(), hashlib.sha1).hexdigest()
        expected = hmac.new(sign_key.encode(), string_to_sign.encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, fields["q-signature"]):
            raise _CosError(
                403,
                "SignatureDoesNotMatch",
                "The calculated signature does not match the provided one; check the key and signing method.",
            )

    # --- operations ----------------------------------------------------------------------

    def _serve(self, request: _Request) -> _Response:
        operation = request.operation
        if operation == "HeadBucket":
            return _Response(200, {"x-cos-bucket-region": self.region})
        if operation == "ListObjects":
            return self._list_objects(request)
        if operation == "ListMultipartUploads":
            return self._list_uploads(request)
        if operation == "PutObject":
            return self._put_object(request)
        if operation == "InitiateMultipartUpload":
            return self._initiate(request)
        if operation == "UploadPart":
            return self._upload_part(request)
        if operation == "ListParts":
            return self._list_parts(request)
        if operation == "CompleteMultipartUpload":
            return self._complete(request)
        if operation == "AbortMultipartUpload":
            with self._lock:
                self._upload_of(request)
                del self._uploads[request.query["uploadId"]]
            return _Response(204)
        if operation in ("HeadObject", "GetObject"):
            return self._read_object(request)
        if operation == "DeleteObject":
            with self._lock:
                self._objects.pop(request.key, None)
            return _Response(204)
        raise _CosError(501, "NotImplemented", "This test endpoint does not implement the operation.")

    def _put_object(self, request: _Request) -> _Response:
        _check_content_md5(request)
        stored = _new_object(request.body, _kept_headers(request.headers))
        with self._lock:
            self._objects[request.key] = stored
        return _Response(200, {"ETag": stored.etag, "x-cos-hash-crc64ecma": str(stored.crc64)})

    def _initiate(self, request: _Request) -> _Response:
        upload = _Upload(
            key=request.key,
            upload_id=f"{int(time.time())}{uuid.uuid4().hex}",
            initiated=time.time(),
            headers=_kept_headers(request.headers),
        )
        with self._lock:
            self._uploads[upload.upload_id] = upload
        return _xml(
            "InitiateMultipartUploadResult",
            [("Bucket", self.bucket), ("Key", request.key), ("UploadId", upload.upload_id)],
        )

    def _upload_of(self, request: _Request) -> _Upload:
        """The upload named by ?uploadId= for this key; call with the lock held."""
        upload = self._uploads.get(request.query.get("uploadId", ""))
        if upload is None or upload.key != request.key:
            raise _CosError(404, "NoSuchUpload", "The specified upload does not exist.")
        return upload

    def _upload_part(self, request: _Request) -> _Response:
        try:
            number = int(request.query["partNumber"])
        except ValueError:
            number = 0
        if not 1 <= number <= 10000:
            raise _CosError(400, "InvalidArgument", "partNumber must be an integer from 1 to 10000.")
        _check_content_md5(request)
        part = _Part(request.body, f'"{hashlib.md5(request.body).hexdigest()}"', time.time())
        with self._lock:
            self._upload_of(request).parts[number] = part
        return _Response(200, {"ETag": part.etag})

    def _list_parts(self, request: _Request) -> _Response:
        marker = _int_param(request.query, "part-number-marker", 0)
        limit = _int_param(request.query, "max-parts", 1000)
        with self._lock:
            upload = self._upload_of(request)
            numbers = sorted(n for n in upload.parts if n > marker)
            listed = [(n, upload.parts[n]) for n in numbers[:limit]]
        truncated = len(numbers) > limit
        encode = request.query.get("encoding-type") == "url"
        fields: list[tuple[str, Any]] = [
            ("Bucket", self.bucket),
            ("Key", quote(request.key, safe="") if encode else request.key),
            ("UploadId", upload.upload_id),
            ("StorageClass", "STANDARD"),
            ("PartNumberMarker", str(marker)),
            ("NextPartNumberMarker", str(listed[-1][0] if listed else marker)),
            ("MaxParts", str(limit)),
            ("IsTruncated", "true" if truncated else "false"),
        ]
        if encode:
            fields.insert(1, ("EncodingType", "url"))
        fields += [
            (
                "Part",
                [
                    ("PartNumber", str(number)),
                    ("LastModified", _iso(part.modified)),
                    ("ETag", part.etag),
                    ("Size", str(len(part.data))),
                ],
            )
            for number, part in listed
        ]
        return _xml("ListPartsResult", fields)

    def _complete(self, request: _Request) -> _Response:
        try:
            root = ElementTree.fromstring(request.body)
            listed = [
                (int(_child_text(part, "PartNumber")), _child_text(part, "ETag").strip('"'))
                for part in root
                if _local(part.tag) == "Part"
            ]
        except (ElementTree.ParseError, ValueError):
            raise _CosError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        if _local(root.tag) != "CompleteMultipartUpload" or not listed:
            raise _CosError(400, "MalformedXML", "The XML you provided was not well-formed.")
        with self._lock:
            upload = self._upload_of(request)
            numbers = [number for number, _ in listed]
            if any(a >= b for a, b in itertools.pairwise(numbers)):
                raise _CosError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
            parts: list[_Part] = []
            for number, etag in listed:
                part = upload.parts.get(number)
                if part is None or part.etag.strip('"') != etag:
                    raise _CosError(400, "InvalidPart", f"Part {number} was not found or its ETag differs.")
                parts.append(part)
            if any(len(part.data) < MIN_PART_SIZE for part in parts[:-1]):
                raise _CosError(400, "EntityTooSmall", "A part other than the last is smaller than 1 MB.")
        # Assembled outside the lock (it can be hundreds of MB); joined once, no other copy.
        data = b"".join(part.data for part in parts)
        binary_md5s = b"".join(bytes.fromhex(part.etag.strip('"')) for part in parts)
        etag = f'"{hashlib.md5(binary_md5s).hexdigest()}-{len(parts)}"'
        stored = _Object(data, etag, CRC64(data), time.time(), upload.headers)
        with self._lock:
            if self._uploads.pop(upload.upload_id, None) is None:  # aborted or completed meanwhile
                raise _CosError(404, "NoSuchUpload", "The specified upload does not exist.")
            self._objects[request.key] = stored
        response = _xml(
            "CompleteMultipartUploadResult",
            [
                ("Location", f"{self.bucket}.cos.{self.region}.myqcloud.com/{quote(request.key)}"),
                ("Bucket", self.bucket),
                ("Key", request.key),
                ("ETag", etag),
            ],
        )
        response.headers["x-cos-hash-crc64ecma"] = str(stored.crc64)
        return response

    def _read_object(self, request: _Request) -> _Response:
        with self._lock:
            stored = self._objects.get(request.key)
        if stored is None:
            raise _CosError(404, "NoSuchKey", "The specified key does not exist.")
        headers = {
            "Content-Type": "application/octet-stream",
            **stored.headers,
            "ETag": stored.etag,
            "Last-Modified": formatdate(stored.modified, usegmt=True),
            "Accept-Ranges": "bytes",
            "x-cos-hash-crc64ecma": str(stored.crc64),
        }
        size = len(stored.data)
        if request.method == "HEAD":
            return _Response(200, headers, length=size)
        span = _parse_range(request.headers.get("range"), size)
        if span is None:
            return _Response(200, headers, memoryview(stored.data))
        first, last = span
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return _Response(206, headers, memoryview(stored.data)[first : last + 1])

    def _list_objects(self, request: _Request) -> _Response:
        prefix = request.query.get("prefix", "")
        delimiter = request.query.get("delimiter", "")
        marker = request.query.get("marker", "")
        limit = _int_param(request.query, "max-keys", 1000)
        encode = request.query.get("encoding-type") == "url"
        with self._lock:
            found = sorted(
                ((k, o) for k, o in self._objects.items() if k.startswith(prefix) and k > marker),
                key=lambda e: e[0],
            )
        contents, prefixes = _split_common(found, prefix, delimiter)
        entries = sorted([*contents, *((p, None) for p in prefixes)], key=lambda e: e[0])
        truncated = len(entries) > limit
        entries = entries[:limit]

        def text(value: str) -> str:
            return quote(value, safe="") if encode else value

        fields: list[tuple[str, Any]] = [
            ("Name", self.bucket),
            ("Prefix", text(prefix)),
            ("Marker", text(marker)),
            ("MaxKeys", str(limit)),
            ("Delimiter", text(delimiter)),
            ("IsTruncated", "true" if truncated else "false"),
        ]
        if encode:
            fields.insert(1, ("EncodingType", "url"))
        if truncated and entries:
            fields.append(("NextMarker", text(entries[-1][0])))
        for key, stored in entries:
            if stored is None:
                fields.append(("CommonPrefixes", [("Prefix", text(key))]))
            else:
                fields.append(
                    (
                        "Contents",
                        [
                            ("Key", text(key)),
                            ("LastModified", _iso(stored.modified)),
                            ("ETag", stored.etag),
                            ("Size", str(len(stored.data))),
                            ("StorageClass", "STANDARD"),
                        ],
                    )
                )
        return _xml("ListBucketResult", fields)

    def _list_uploads(self, request: _Request) -> _Response:
        prefix = request.query.get("prefix", "")
        delimiter = request.query.get("delimiter", "")
        encode = request.query.get("encoding-type") == "url"
        with self._lock:
            found = sorted(
                ((u.key, u) for u in self._uploads.values() if u.key.startswith(prefix)),
                key=lambda e: (e[0], e[1].initiated),
            )
        uploads, prefixes = _split_common(found, prefix, delimiter)

        def text(value: str) -> str:
            return quote(value, safe="") if encode else value

        fields: list[tuple[str, Any]] = [
            ("Bucket", self.bucket),
            ("KeyMarker", ""),
            ("UploadIdMarker", ""),
            ("NextKeyMarker", ""),
            ("NextUploadIdMarker", ""),
            ("Prefix", text(prefix)),
            ("Delimiter", text(delimiter)),
            ("MaxUploads", request.query.get("max-uploads", "1000")),
            ("IsTruncated", "false"),
        ]
        if encode:
            fields.insert(1, ("EncodingType", "url"))
        fields += [
            (
                "Upload",
                [
                    ("Key", text(key)),
                    ("UploadId", upload.upload_id),
                    ("StorageClass", "STANDARD"),
                    ("Initiated", _iso(upload.initiated)),
                ],
            )
            for key, upload in uploads
        ]
        fields += [("CommonPrefixes", [("Prefix", text(p))]) for p in prefixes]
        return _xml("ListMultipartUploadsResult", fields)


# --- HTTP plumbing -------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    key: str
    query: dict[str, str]
    operation: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class _Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | memoryview = b""
    length: int | None = None  # Content-Length when it is not len(body) (HEAD)


class _Server(LoopbackHTTPServer):
    request_queue_size = 128  # the SDK opens several connections at once for parts

    def __init__(
        self, address: tuple[str, int], handler: type[BaseRequestHandler], endpoint: CosEndpoint
    ) -> None:
        self.endpoint = endpoint
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def version_string(self) -> str:
        return "tencent-cos"

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def _handle(self) -> None:
        endpoint = self._server.endpoint
        headers = {name.lower(): value for name, value in self.headers.items()}
        request_id = uuid.uuid4().hex
        try:
            body = self._read_body(headers)
        except ValueError:
            self.close_connection = True
            error = _error_response(400, "InvalidRequest", "The request body is malformed.", "", request_id)
            self._send(error, self.command, request_id)
            return
        split = urlsplit(self.path)
        path = unquote(split.path)
        key = path[1:]
        pairs = parse_qsl(split.query, keep_blank_values=True)
        query = dict(pairs)
        operation = _operation(self.command, key, query, headers)
        seen = Seen(self.command, key, query, 0, operation)
        resource = f"{headers.get('host', '')}{split.path}"
        if self._server.stopping.is_set():
            # Stopped while the body came in (from the socket's buffer, after the cut): a host
            # that went away does not act on a request it had not finished reading.
            self.close_connection = True
            endpoint._record(seen)
            return

        fault = endpoint._take_fault(operation)
        if fault is not None and fault.kind == "delay" and self._server.stopping.wait(fault.seconds):
            fault = _Fault("drop", 0, None)  # stopped while waiting: the answer never comes
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            endpoint._record(seen)
            return

        request = _Request(self.command, key, query, operation, headers, body)
        try:
            if fault is not None and fault.kind == "fail":
                raise _CosError(fault.status, fault.code, "Injected by the test endpoint.")
            self._route(headers.get("host", ""))
            endpoint._authenticate(self.command, path, pairs, headers)
            response = endpoint._serve(request)
        except _CosError as error:
            response = _error_response(error.status, error.code, error.message, resource, request_id)
        seen.status = response.status
        endpoint._record(seen)  # before answering, so a test sees it as soon as its call returns
        self._send(response, self.command, request_id)

    def _route(self, host: str) -> None:
        endpoint = self._server.endpoint
        name = host.lower()
        # A custom domain naming this endpoint itself stands for the bucket (CosConfig Domain=...).
        if name in (f"{endpoint.host}:{endpoint.port}", f"localhost:{endpoint.port}"):
            return
        match = _HOST.match(name.rsplit(":", 1)[0] if name.rsplit(":", 1)[-1].isdigit() else name)
        if match is None or match["bucket"] != endpoint.bucket or match["region"] != endpoint.region:
            raise _CosError(404, "NoSuchBucket", "The specified bucket does not exist.")

    def _read_body(self, headers: dict[str, str]) -> bytes:
        """The whole body, always, so the connection stays usable for the next request."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(headers.get("content-length", "0"))
        if length < 0:
            raise ValueError("negative Content-Length")
        body = self._read_paced(length) if length else b""
        if len(body) != length:
            raise ConnectionError("the client hung up mid-body")
        return body

    def _read_paced(self, length: int) -> bytes:
        rate = self._server.endpoint.link_bytes_per_second
        if not rate:
            return bytes(self.rfile.read(length))
        chunks: list[bytes] = []
        received, started = 0, time.monotonic()
        while received < length:
            if self._server.stopping.is_set():
                raise ConnectionError("the endpoint stopped mid-body")
            chunk = self.rfile.read(min(256 * 1024, length - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            ahead = received / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        return b"".join(chunks)

    def _send(self, response: _Response, method: str, request_id: str) -> None:
        body = response.body
        length = response.length if response.length is not None else len(body)
        self.send_response(response.status)
        self.send_header("x-cos-request-id", request_id)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD" and body:
            self.wfile.write(body)


# --- helpers -------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _operation(method: str, key: str, query: dict[str, str], headers: dict[str, str]) -> str:
    if _UNSUPPORTED_SUBRESOURCES & query.keys() or "x-cos-copy-source" in headers:
        return "Unsupported"
    if not key:
        if method == "HEAD":
            return "HeadBucket"
        if method == "GET":
            return "ListMultipartUploads" if "uploads" in query else "ListObjects"
        return "Unsupported"
    if method == "PUT":
        return "UploadPart" if "uploadId" in query and "partNumber" in query else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "InitiateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in query else "Unsupported"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject"
    return "Unsupported"


def _new_object(data: bytes, headers: dict[str, str]) -> _Object:
    return _Object(data, f'"{hashlib.md5(data).hexdigest()}"', CRC64(data), time.time(), headers)


def _kept_headers(headers: dict[str, str]) -> dict[str, str]:
    kept = {name: value for name, value in headers.items() if name.startswith("x-cos-meta-")}
    for name in ("content-type", "content-disposition", "content-encoding", "cache-control", "expires"):
        if name in headers:
            kept[name.title()] = headers[name]  # "Content-Type", so it replaces the default on HEAD/GET
    return kept


def _check_content_md5(request: _Request) -> None:
    sent = request.headers.get("content-md5")
    if sent is not None and sent != base64.b64encode(hashlib.md5(request.body).digest()).decode():
        raise _CosError(400, "BadDigest", "The Content-MD5 you specified did not match what was received.")


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name) or default)
    except ValueError:
        raise _CosError(400, "InvalidArgument", f"{name} must be an integer.") from None


def _split_common(
    found: list[tuple[str, Any]], prefix: str, delimiter: str
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Entries, and the common prefixes that a delimiter rolls keys up into."""
    if not delimiter:
        return found, []
    entries: list[tuple[str, Any]] = []
    prefixes: list[str] = []
    for key, value in found:
        cut = key.find(delimiter, len(prefix))
        if cut < 0:
            entries.append((key, value))
        elif (common := key[: cut + len(delimiter)]) not in prefixes:
            prefixes.append(common)
    return entries, prefixes


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=a-b` range as (first, last); None means the whole object (no or multiple ranges)."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first_text, _, last_text = value[len("bytes=") :].strip().partition("-")
    try:
        if first_text:
            first = int(first_text)
            last = min(int(last_text), size - 1) if last_text else size - 1
        else:
            first, last = max(size - int(last_text), 0), size - 1
    except ValueError:
        return None
    if first >= size or first > last:
        raise _CosError(416, "InvalidRange", "The requested range is not satisfiable.")
    return first, last


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ElementTree.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    raise ValueError(f"missing {name}")


def _build(parent: ElementTree.Element, fields: list[tuple[str, Any]]) -> None:
    for name, value in fields:
        child = ElementTree.SubElement(parent, name)
        if isinstance(value, list):
            _build(child, value)
        else:
            child.text = value


def _xml(root_name: str, fields: list[tuple[str, Any]], status: int = 200) -> _Response:
    root = ElementTree.Element(root_name)
    _build(root, fields)
    body = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return _Response(status, {"Content-Type": "application/xml"}, body)


def _error_response(status: int, code: str, message: str, resource: str, request_id: str) -> _Response:
    return _xml(
        "Error",
        [("Code", code), ("Message", message), ("Resource", resource), ("RequestId", request_id)],
        status,
    )


def main() -> None:
    """Serve one bucket until interrupted: for benchmarks and trying the COS path by hand.

    python -m tests.cos_endpoint --port 9000 --secret-id AKIDdemo --secret-key demo-key
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-id", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--bucket", default="test-1250000000")
    parser.add_argument("--region", default="ap-guangzhou")
    parser.add_argument(
        "--link-mbps", type=float, help="MB/s each connection may upload at (default: no limit)"
    )
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    keys = {"secret_id": args.secret_id, "secret_key": args.secret_key}
    endpoint = CosEndpoint(**keys, bucket=args.bucket, region=args.region, port=args.port)
    endpoint.link_bytes_per_second = args.link_mbps * 1e6 if args.link_mbps else None
    with endpoint:
        where = f"http://{endpoint.host}:{endpoint.port}"
        print(f"COS endpoint for bucket {args.bucket} ({args.region}) on {where}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
