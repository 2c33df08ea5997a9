"""Hostile requests: generated bodies, the gateway's OpenAPI fuzzed, ids that try to escape.

Property-based (hypothesis) and OpenAPI-driven (schemathesis) tests that nothing a client
sends can crash the gateway (no 5xx), start a recording unless the request is valid, put a
file outside the storage folder, the run's work folder or the request's COS Path, or make
the gateway buffer a huge body. Everything runs in-process (ASGI) against the temporary
Prefect API of `prefect_api`; no worker runs, so runs the gateway creates stay Scheduled
and are finished again at the end.

Hypothesis keeps no example database here (`database=None`), so every run draws afresh and
the counts below are the examples of each run. (It still caches constants in `.hypothesis/`,
which it git-ignores itself.)
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import string
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Completed
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from deployments.gateway import MAX_REQUEST_BYTES, REQUEST_ID_HEADER, create_app
from recorder.request import ROOM_ID_MAX, RecordingRequest, RequestError, parse_request
from recorder.sealing import new_service_key
from recorder.settings import RecorderSettings
from recorder.storage.base import StorageError
from recorder.storage.cos import CosStorage
from recorder.storage.credentials import CosCredentials
from recorder.storage.keys import recording_key
from recorder.storage.local import LocalStorage
from recorder.workspace import Take, Workspace

API_KEY = "fault-key-6b7c8d"
USER_SIG = "sig-HOSTILE-NEVER-7c1d"
SECRET_KEY = "cos-HOSTILE-NEVER-9e2f"
SECRETS = (USER_SIG, SECRET_KEY)
T0 = datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)
# Valid requests generated here use SdkAppIds no other test uses: none of them is answered
# with a run another test started for the same recording.
OUR_APPS = (1_400_777_000, 1_400_777_999)

# TRTC's rules, written out independently of recorder.request: the oracle the model is held to.
USER_ID_RULE = re.compile(r"[A-Za-z0-9_-]{1,32}")
STR_ROOM_ALPHABET = "ABCXYZabcxyz0189 !#$%&()+-:;<=.>?@[]^_{}|~,"

# Counts: parse_request sees 6,500 dicts + 3,500 JSON texts and bytes; the gateway 2,000
# bodies; the OpenAPI fuzzer 400 cases; the escape properties 600 + 600 cases.
PARSE_DICT_EXAMPLES = 6_500
PARSE_RAW_EXAMPLES = 3_500
GATEWAY_EXAMPLES = 2_000
VALID_SENT = 25
OPENAPI_EXAMPLES = 400

FAST = settings(
    deadline=None,
    database=None,
    # Huge strings and deep junk are the point here, not a generator problem.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# -- strategies --------------------------------------------------------------------------------

HOSTILE_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        ".",
        "..",
        "../..",
        "../../etc/passwd",
        "/",
        "//",
        "\\",
        "..\\..",
        "%2e%2e",
        "%2E%2E%2F..",
        "\uff0e\uff0e",  # fullwidth dots
        "\u2024\u2024",  # one-dot leaders
        "\u3002\u3002",  # ideographic full stops
        "\u202e",  # right-to-left override
        "\ufeff",
        "\r\n",
        "\ud800",  # a lone surrogate: JSON can carry it ("\\ud800"), UTF-8 cannot
        "null",
        "1e400",
        "NaN",
        "ap-guangzhou\x00",
        "recorder_1\n",
        "\U0001f600",
        "房间",
    ]
)
# Built by repetition: hypothesis would spend seconds drawing 20,000 characters one by one.
HUGE_STRINGS = st.builds(
    lambda piece, n: piece * n,
    st.sampled_from(["a", "房", "/", ".", "../", "\x00", "%", "\\u0000"]),
    st.integers(min_value=33, max_value=20_000),
)
STRINGS = st.one_of(st.text(max_size=24), HOSTILE_STRINGS, HUGE_STRINGS)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    STRINGS,
)


def _nested(depth: int, leaf: Any, wrap: Any) -> Any:
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


# Deep structures are made by a sampled maker (st.recursive costs milliseconds a draw, and
# these tests need thousands of requests in seconds); made afresh for each draw, since the
# mutations write into what they draw.
DEEP_JUNK = [
    lambda: _nested(500, 1, lambda x: [x]),
    lambda: _nested(300, "x", lambda x: {"a": x}),
    lambda: _nested(100, {"CosConfig": {"Path": "../.."}}, lambda x: {"CosConfig": x}),
    lambda: {"SdkAppId": _nested(50, 1, lambda x: [x]), "UserId": {"$ref": "#"}},
    lambda: [[], {}, [{}], {"": []}],
]
JUNK = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(STRINGS, SCALARS, max_size=3),
    st.sampled_from(DEEP_JUNK).map(lambda make: make()),
)

# Ids from pools as much as character by character (each drawn character costs hypothesis
# tens of microseconds).
ID_POOL = ["a", "0", "_", "-", "recorder_1", "teacher", "A-b_9", "x" * 32, "-_-", "Z9", "robot_r2"]
USER_IDS = st.one_of(
    st.sampled_from(ID_POOL),
    st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=32),
)
STR_ROOM_IDS = st.one_of(
    st.sampled_from(["1", ".", "..", "...", "a b", "?#", "[x]", "%2e%2e", "|~,", "r" * 64]),
    st.text(STR_ROOM_ALPHABET, min_size=1, max_size=64),
)
COS_PATHS = st.sampled_from(["/", "/trtc", "/a/b/c", "/房间/2024", "//x//", "/" + "p" * 200])
ROOMS = st.one_of(
    st.tuples(st.just("RoomId"), st.integers(1, ROOM_ID_MAX)),
    st.tuples(st.just("StrRoomId"), STR_ROOM_IDS),
)
VALID_REQUESTS = st.builds(
    # One room, numeric or string: both or neither is a case for the mutations.
    lambda request, room: request | dict([room]),
    st.fixed_dictionaries(
        {
            "SdkAppId": st.integers(*OUR_APPS),
            "UserId": USER_IDS,
            "UserSig": st.just(USER_SIG),
            "CosConfig": st.fixed_dictionaries(
                {
                    "Region": st.sampled_from(["ap-guangzhou", "ap-shanghai", "na-siliconvalley"]),
                    "Bucket": st.sampled_from(["class-1250000000", "a-1", "x9-0"]),
                },
                optional={
                    "Path": COS_PATHS,
                    "SecretId": st.just("AKIDfault"),
                    "SecretKey": st.just(SECRET_KEY),
                },
            ),
        },
        optional={
            "Mode": st.sampled_from(["00", "01", "02"]),
            "MaxIdleTime": st.integers(1, 86400),
            "Callback": st.just("http://127.0.0.1:9/never-called"),
            "Anchors": st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=5, unique=True),
        },
    ),
    ROOMS,
)

TOP_FIELDS = [
    "SdkAppId",
    "RoomId",
    "StrRoomId",
    "UserId",
    "UserSig",
    "CosConfig",
    "Callback",
    "Mode",
    "MaxIdleTime",
    "Anchors",
]
COS_FIELDS = ["Region", "Bucket", "Path", "SecretId", "SecretKey"]
# Values just across each field's edge, beside the junk any field may get.
NEAR_MISSES = st.sampled_from(
    [
        0,
        -1,
        1,
        4294967294,
        4294967295,
        4294967296,
        86400,
        86401,
        1.0,
        True,
        "1400000000",
        "00",
        "03",
        "2",
        "a" * 32,
        "a" * 33,
        "a b",
        "../x",
        "ap-Guangzhou",
        "Bucket-1",
        "-1",
        "ftp://127.0.0.1/x",
        "http://",
        "javascript:alert(1)",
        [],
        ["a"] * 51,
        ["a", "a"],
        {},
    ]
).map(copy.deepcopy)  # a fresh list or dict each time: mutations write into what they draw


def _bases() -> list[dict[str, Any]]:
    """Valid requests to mutate, one for each mix of the fields' kinds (numeric or string
    room, the shortest and longest UserId, COS keys or none, optional fields or none)."""
    rooms: list[dict[str, Any]] = [
        {"RoomId": 1},
        {"RoomId": ROOM_ID_MAX},
        {"StrRoomId": ".."},
        {"StrRoomId": "a b|~"},
    ]
    users = [{"UserId": "a"}, {"UserId": "x" * 32}]
    cos: list[dict[str, Any]] = [
        {"Region": "ap-guangzhou", "Bucket": "class-1250000000"},
        {
            "Region": "na-siliconvalley",
            "Bucket": "a-1",
            "Path": "/房间/2024",
            "SecretId": "AKIDfault",
            "SecretKey": SECRET_KEY,
        },
    ]
    extras: list[dict[str, Any]] = [
        {},
        {
            "Mode": "02",
            "MaxIdleTime": 86400,
            "Callback": "http://127.0.0.1:9/x",
            "Anchors": ["teacher", "s-1"],
        },
    ]
    return [
        {"SdkAppId": OUR_APPS[0], "UserSig": USER_SIG, "CosConfig": c} | room | user | extra
        for room, user, c, extra in itertools.product(rooms, users, cos, extras)
    ]


BASES = _bases()
# What a mutation puts in a field: a value just across an edge, or junk.
MUTANTS = st.one_of(NEAR_MISSES, HOSTILE_STRINGS, JUNK)
EXTRA_KEYS = st.sampled_from(["Extra", "roomId", "userid", "", "\x00", "__proto__", "$where", "\ud800"])


@st.composite
def mutated_requests(draw: st.DrawFn) -> Any:
    """A valid request with one or two fields removed, retyped, pushed over an edge or added;
    sometimes the whole request swapped for junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JUNK)
    request: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 2))):
        cos = request.get("CosConfig")
        in_cos = isinstance(cos, dict) and draw(st.booleans())
        target: dict[str, Any] = cos if in_cos and isinstance(cos, dict) else request
        key = draw(st.sampled_from(COS_FIELDS if in_cos else TOP_FIELDS) | EXTRA_KEYS)
        if draw(st.integers(0, 3)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(MUTANTS)
    return request


def _dumps(value: Any, ascii_only: bool) -> bytes:
    # Without ensure_ascii a lone surrogate goes out as the invalid UTF-8 a hostile client can send.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


RAW_BODIES = st.one_of(
    st.builds(_dumps, mutated_requests(), st.booleans()),
    st.builds(_dumps, JUNK, st.booleans()),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    # Truncated JSON, nesting far deeper than any parser's recursion ("[[[[..." fits in 64 KiB).
    st.builds(
        lambda body, cut: body[:cut], st.builds(_dumps, VALID_REQUESTS, st.just(True)), st.integers(0, 200)
    ),
    st.builds(
        lambda opener, n: opener * n, st.sampled_from([b"[", b'{"a":', b"-", b'"']), st.integers(1, 60_000)
    ),
)


# -- parse_request: 10,000 generated requests ------------------------------------------------------


def _judge(data: Any) -> RecordingRequest | None:
    """parse_request's answer, held to its contract: a request that is safe downstream, or a
    RequestError whose problems can be sent back (UTF-8) and never show a secret."""
    try:
        request = parse_request(data)
    except RequestError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        text = "\n".join(exc.problems)
        text.encode("utf-8")  # the gateway sends them as UTF-8 JSON
        assert not any(secret in text for secret in SECRETS), text
        return None
    assert isinstance(request, RecordingRequest)
    assert USER_ID_RULE.fullmatch(request.UserId)
    path = request.CosConfig.Path
    assert path.startswith("/") and not {".", ".."} & set(path.split("/")), path
    assert "\x00" not in path and "\\" not in path
    assert request.StrRoomId is None or "/" not in request.StrRoomId
    assert all(USER_ID_RULE.fullmatch(anchor) for anchor in request.Anchors or [])
    return request


def test_parse_request_on_generated_dicts_returns_a_request_or_a_request_error() -> None:
    seen = {"all": 0, "accepted": 0}

    @settings(FAST, max_examples=PARSE_DICT_EXAMPLES)
    @given(data=st.one_of(mutated_requests(), mutated_requests(), mutated_requests(), VALID_REQUESTS))
    def check(data: Any) -> None:
        seen["all"] += 1
        seen["accepted"] += _judge(data) is not None

    check()
    assert seen["all"] >= PARSE_DICT_EXAMPLES
    # Both sides of the contract were exercised, not only refusals.
    assert seen["accepted"] > 100, seen


def test_parse_request_on_generated_json_text_and_bytes_returns_a_request_or_a_request_error() -> None:
    seen = {"all": 0}

    @settings(FAST, max_examples=PARSE_RAW_EXAMPLES)
    @given(body=RAW_BODIES, as_text=st.booleans())
    def check(body: bytes, as_text: bool) -> None:
        seen["all"] += 1
        _judge(body.decode("utf-8", "replace") if as_text else body)

    check()
    assert seen["all"] >= PARSE_RAW_EXAMPLES


# -- the gateway: 2,000 generated bodies, real Prefect API -------------------------------------


def _count_runs(excluding: set[str] | None = None) -> int:
    run_filter = (
        FlowRunFilter(id=FlowRunFilterId(not_any_=[UUID(i) for i in excluding])) if excluding else None
    )
    with get_client(sync_client=True) as client:
        return client.count_flow_runs(flow_run_filter=run_filter)


def _finish(run_ids: set[str]) -> None:
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            client.set_flow_run_state(UUID(run_id), Completed(), force=True)


def _expected_status(body: bytes, authorised: bool) -> int:
    """What the gateway must answer, worked out without it."""
    if not authorised:
        return 401
    if len(body) > MAX_REQUEST_BYTES:
        return 413
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        return 400
    try:
        parse_request(raw)
    except RequestError:
        return 422
    return 202


AUTHORISED = [{"Authorization": f"Bearer {API_KEY}"}, {"X-Api-Key": API_KEY}]
REFUSED = [{}, {"Authorization": "Bearer "}, {"Authorization": API_KEY + "x"}, {"X-Api-Key": "' OR 1=1 --"}]
OVERSIZED = st.builds(
    lambda request, n: _dumps(request | {"UserSig": "s" * n}, True),
    st.sampled_from(BASES),
    st.integers(MAX_REQUEST_BYTES - 200, 3 * MAX_REQUEST_BYTES),
)


def test_generated_bodies_never_get_a_5xx_and_only_valid_requests_become_runs(deployment_id: UUID) -> None:
    service = RecorderSettings(service_key=SecretStr(new_service_key()), api_keys=SecretStr(API_KEY))
    seen = {"all": 0, 202: 0, 400: 0, 401: 0, 413: 0, 422: 0}
    created: set[str] = set()
    before = _count_runs()

    with TestClient(create_app(service)) as client:

        @settings(FAST, max_examples=GATEWAY_EXAMPLES)
        @given(
            path=st.sampled_from(["/", "/recordings"]),
            # Three in four with a right key: the body is what is under test.
            auth=st.sampled_from(AUTHORISED * 6 + REFUSED),
            accept=st.sampled_from(["*/*", "application/json", "text/plain"]),
            body=st.one_of(
                RAW_BODIES,
                RAW_BODIES,
                RAW_BODIES,
                RAW_BODIES,
                OVERSIZED,
                st.builds(_dumps, st.sampled_from(BASES) | VALID_REQUESTS, st.booleans()),
            )
            | st.one_of(*[st.builds(_dumps, mutated_requests(), st.booleans())] * 5),
        )
        def check(path: str, auth: dict[str, str], accept: str, body: bytes) -> None:
            expected = _expected_status(body, auth in AUTHORISED)
            # Mutations often leave a request valid, and each valid one costs Prefect API
            # calls (about 0.1 s): past a few dozen, they are skipped, not sent or counted.
            assume(expected != 202 or seen[202] < VALID_SENT)
            seen["all"] += 1
            answer = client.post(path, content=body, headers={**auth, "Accept": accept})
            assert answer.status_code == expected, (answer.status_code, answer.text[:300])
            seen[expected] += 1
            assert not any(secret in answer.text for secret in SECRETS)
            if expected == 202:
                created.add(answer.headers[REQUEST_ID_HEADER])
            else:
                assert REQUEST_ID_HEADER not in answer.headers

        check()

    try:
        assert seen["all"] >= GATEWAY_EXAMPLES
        # No run but those the gateway answered 202 for: every refused body created nothing.
        assert _count_runs(excluding=created) == before
        assert all(seen[status] > 0 for status in (202, 400, 401, 413, 422)), seen
    finally:
        _finish(created)


# -- schemathesis: the gateway's own OpenAPI document ------------------------------------------


def test_the_openapi_document_describes_the_request_body() -> None:
    app = create_app(RecorderSettings())
    document = app.openapi()
    for path in ("/", "/recordings"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["required"]) == {"SdkAppId", "UserId", "UserSig", "CosConfig"}
        assert body["properties"]["CosConfig"]["properties"]["Path"]["type"] == "string"
        assert body["properties"]["UserSig"]["writeOnly"] is True
    assert "$defs" not in json.dumps(document)


# No 5xx; and what the document says of a response's body, headers and media type holds.
# (Not status_code_conformance: the routes do not list their 4xx answers in the document.)
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    response_headers_conformance,
    content_type_conformance,
]


def test_openapi_fuzzing_of_every_operation_finds_no_server_error(deployment_id: UUID) -> None:
    """schemathesis generates requests from /openapi.json (schema-valid and schema-breaking
    bodies, path ids, headers) for every operation. An open gateway (loopback, no keys) so
    bodies reach the handlers; a callback key so /trtc/callback is on (without one its 503
    "not configured" is the intended answer)."""
    service = RecorderSettings(
        service_key=SecretStr(new_service_key()), trtc_callback_key=SecretStr("fault-callback-key")
    )
    app: FastAPI = create_app(service)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in schema.get_all_operations())}
    assert operations == {
        "GET /health",
        "POST /",
        "POST /recordings",
        "GET /recordings/{run_id}",
        "POST /recordings/{run_id}/stop",
        "POST /trtc/callback",
    }
    strategy = schema.as_strategy(schemathesis.GenerationMode.POSITIVE) | schema.as_strategy(
        schemathesis.GenerationMode.NEGATIVE
    )
    seen: dict[str, int] = {}
    created: set[str] = set()
    before = _count_runs()

    @settings(FAST, max_examples=OPENAPI_EXAMPLES)
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call()
        case.validate_response(response, checks=CHECKS)
        label = f"{case.method.upper()} {case.operation.path} {response.status_code}"
        seen[label] = seen.get(label, 0) + 1
        if case.operation.path in ("/", "/recordings") and response.status_code == 202:
            headers = {name.lower(): values for name, values in response.headers.items()}
            created.update(headers[REQUEST_ID_HEADER])

    try:
        check()
        assert sum(seen.values()) >= OPENAPI_EXAMPLES
        assert {label.rsplit(" ", 1)[0] for label in seen} == operations, seen
        assert _count_runs(excluding=created) == before
    finally:
        _finish(created)


# -- ids that try to escape: COS keys, the storage folder, the work folder -------------------------

HOSTILE_PATHS = [
    "../../etc",
    "/abs/../..",
    "a/\x00b",
    "a" * 5000,
    "/".join(["a"] * 3000),
    "..\\..",
    "\uff0e\uff0e/\uff0e\uff0e/etc",
    "\u2024\u2024/x",
    "\u3002\u3002",
    "%2e%2e/%2e%2e",
    "%2E%2E%2F%2E%2E",
    "..%00",
    "/./a",
    "a/./b",
    "//..//",
    "...",
    ". ./ ..",
    "a/..../b",
    "\u202e/..",
    "/" * 500,
    "~/x",
    "C:\\Windows",
    "C:/Windows",
    "/etc/passwd",
]


def _request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "SdkAppId": OUR_APPS[0],
        "RoomId": 1,
        "UserId": "recorder_1",
        "UserSig": USER_SIG,
        "CosConfig": {"Region": "ap-guangzhou", "Bucket": "class-1250000000", "Path": "/trtc"},
    }
    cos = changes.pop("CosConfig", {})
    return request | changes | {"CosConfig": request["CosConfig"] | cos}


def _cos_url(request: RecordingRequest, key: str) -> str:
    location = request.CosConfig
    credentials = CosCredentials(secret_id="AKIDx", secret_key=SecretStr("x"), source="request")
    return CosStorage(location, credentials, RecorderSettings()).url(key)


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


def _assert_stays_under_the_path(request: RecordingRequest, key: str) -> None:
    """The key is {Path}/{room}/{file}: the Path's segments, then exactly two of ours, none
    of them empty, '.' or '..'; and the object's URL decodes (once, as COS does) to that very
    key. A key is an object's name, not a URL: a Path segment "%2e%2e" or the room ".."
    (encoded "%2E%2E" by recording_key) is a name of its own, sent to COS as "%252e%252e"."""
    prefix = [p for p in request.CosConfig.Path.split("/") if p]
    parts = key.split("/")
    assert parts[: len(prefix)] == prefix and len(parts) == len(prefix) + 2, key
    assert all(p and p not in (".", "..") and "\x00" not in p for p in parts), key
    url_path = urlsplit(_cos_url(request, key)).path
    assert unquote(url_path) == "/" + key
    # Nor may a URL client resolve a dot segment (WHATWG counts "%2e" and ".%2E" as dots too).
    raw_segments = [s.lower() for s in url_path.split("/")[1:]]
    assert not {".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"} & set(raw_segments), url_path


def _store(storage_root: Path, key: str, source: Path) -> Path | None:
    """Store with the real local storage: the file's path (checked inside the folder), or
    None when the storage refused the key (a name too long for the file system)."""
    try:
        url = LocalStorage(storage_root).store(source, key)
    except StorageError:
        return None
    stored = Path(unquote(urlsplit(url).path)).resolve()
    assert stored.is_file() and stored.is_relative_to(storage_root.resolve()), (key, stored)
    return stored


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=lambda p: repr(p[:24]))
def test_a_cos_path_that_tries_to_escape_is_refused_or_stays_under_the_storage_folder(
    tmp_path: Path, path: str
) -> None:
    storage_root = tmp_path / "storage"
    source = tmp_path / "take.mp4"
    source.write_bytes(b"media")
    try:
        request = parse_request(_request(CosConfig={"Path": path}))
    except RequestError as exc:
        assert any(p.startswith("CosConfig.Path: ") for p in exc.problems), exc.problems
        return
    key = recording_key(request.CosConfig.Path, request.room, "teacher", T0, "mp4")
    _assert_stays_under_the_path(request, key)
    stored = _store(storage_root, key, source)
    if stored is not None:
        assert stored.relative_to(storage_root.resolve()).as_posix().startswith(key.rsplit(".", 1)[0])
    # Nothing anywhere else: only the source file beside the storage folder.
    assert _files_under(tmp_path) - _files_under(storage_root) <= {source, storage_root}


PATH_SEGMENTS = st.one_of(
    st.sampled_from(
        ["", ".", "..", "...", "%2e%2e", "%2E", "\uff0e\uff0e", "\u2024", "\\", "..\\", "\x00", "~", "a"]
    ),
    st.text(max_size=8),
)


def test_generated_cos_paths_rooms_and_anchors_never_leave_the_path_or_the_storage_folder(
    tmp_path: Path,
) -> None:
    storage_root = tmp_path / "storage"
    source = tmp_path / "take.mp4"
    source.write_bytes(b"media")
    seen = {"all": 0, "stored": 0}

    @settings(FAST, max_examples=600)
    @given(
        path=st.lists(PATH_SEGMENTS, max_size=5).map("/".join),
        room=st.text(STR_ROOM_ALPHABET + "/\\\x00%.", min_size=1, max_size=70)
        | st.sampled_from([".", "..", "..."]),
        anchor=USER_IDS,
    )
    def check(path: str, room: str, anchor: str) -> None:
        seen["all"] += 1
        try:
            request = parse_request(
                _request(CosConfig={"Path": path}, RoomId=None, StrRoomId=room, UserId=anchor)
            )
        except RequestError:
            return
        key = recording_key(request.CosConfig.Path, request.room, anchor, T0, "mp4")
        _assert_stays_under_the_path(request, key)
        seen["stored"] += _store(storage_root, key, source) is not None

    check()
    assert seen["all"] >= 600 and seen["stored"] > 50, seen
    assert _files_under(tmp_path) - _files_under(storage_root) <= {source, storage_root}


def test_user_ids_are_accepted_exactly_when_they_are_trtc_user_ids(tmp_path: Path) -> None:
    """UserId and Anchors: anything outside TRTC's rule is refused; what is accepted makes one
    plain folder in the run's work folder and one plain key segment."""
    run = Workspace(tmp_path / "work" / "run-1")
    seen = {"all": 0, "accepted": 0}

    @settings(FAST, max_examples=600)
    @given(user=st.text(max_size=40) | HOSTILE_STRINGS | HUGE_STRINGS | USER_IDS, as_anchor=st.booleans())
    def check(user: str, as_anchor: bool) -> None:
        seen["all"] += 1
        changes: dict[str, Any] = {"Anchors": [user]} if as_anchor else {"UserId": user}
        valid = USER_ID_RULE.fullmatch(user) is not None
        try:
            parse_request(_request(**changes))
        except RequestError as exc:
            field = "Anchors" if as_anchor else "UserId"
            assert not valid and any(p.startswith(f"{field}: ") for p in exc.problems), exc.problems
            return
        assert valid, user
        seen["accepted"] += 1
        take = Take(anchor=user, started_at=T0, stream_url="rtmp://127.0.0.1/live/x")
        folder = run.add(take)
        assert folder.resolve().parent == run.root.resolve()
        assert recording_key("/trtc", "1", user, T0, "mp4").split("/")[2].startswith(user + "_")

    check()
    assert seen["all"] >= 600 and seen["accepted"] > 50, seen
    assert {p.parent for p in _files_under(tmp_path / "work") if p.is_file()} <= {
        p for p in run.root.iterdir() if p.is_dir()
    }


@pytest.mark.parametrize(
    "anchor",
    ["../victim", "../../victim", "a/b", "sub/../../victim", "/tmp/victim", "x\x00y", "../" * 40 + "v"],
)
def test_the_work_folder_refuses_a_take_that_would_leave_it(tmp_path: Path, anchor: str) -> None:
    """Anchors reach the work folder only through TRTC's UserId rule (request, room backends);
    the work folder holds to it anyway: no take is written, or discarded, outside the run."""
    run = Workspace(tmp_path / "work" / "run-1")
    take = Take(anchor=anchor, started_at=T0, stream_url="rtmp://127.0.0.1/live/x")
    # Where such a take would otherwise be written (and what discard would remove): planted
    # with a file of someone else's when that is inside this test's folder.
    target = (run.root / take.name.replace("\x00", "")).resolve()
    planted = target.is_relative_to(tmp_path) and target.parent != run.root.resolve()
    if planted:
        target.mkdir(parents=True)
        (target / "keep.txt").write_text("not the recorder's")
    with pytest.raises(ValueError, match="cannot name a folder inside the run folder"):
        run.add(take)
    with pytest.raises(ValueError, match="cannot name a folder inside the run folder"):
        run.discard(take)
    if planted:
        assert (target / "keep.txt").read_text() == "not the recorder's"
        assert not (target / "take.json").exists()
    assert not list(tmp_path.rglob("take.json"))


def test_string_rooms_that_look_like_paths_are_refused_or_one_encoded_folder(tmp_path: Path) -> None:
    storage_root = tmp_path / "storage"
    source = tmp_path / "take.mp4"
    source.write_bytes(b"media")
    for room in ["..", ".", "...", "a/b", "../x", "/", "\\", "%2e%2e", "x\x00", "?#", "a" * 65, "a" * 64]:
        try:
            request = parse_request(_request(RoomId=None, StrRoomId=room))
        except RequestError as exc:
            assert any(p.startswith("StrRoomId: ") for p in exc.problems), (room, exc.problems)
            assert "/" in room or "\\" in room or "\x00" in room or len(room) > 64
            continue
        key = recording_key(request.CosConfig.Path, request.room, "teacher", T0, "mp4")
        _assert_stays_under_the_path(request, key)
        stored = _store(storage_root, key, source)
        assert stored is not None and stored.parent.parent == (storage_root / "trtc").resolve(), (
            room,
            stored,
        )


# -- oversized bodies: refused before they are read ---------------------------------------------

TEN_MB = 10 * 1024 * 1024
CHUNK = 64 * 1024


def _post_streamed(
    app: FastAPI, path: str, headers: dict[str, str], chunks: Iterator[bytes]
) -> tuple[int, int, float]:
    """POST a body chunk by chunk straight into the ASGI app: its status, how many body
    bytes the app pulled, and the seconds it took. Only the app's own reads pull chunks."""
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    started = time.monotonic()
    asyncio.run(app(scope, receive, send))
    return status, pulled, time.monotonic() - started


def _ten_mb() -> Iterator[bytes]:
    chunk = b" " * CHUNK
    return iter([chunk] * (TEN_MB // CHUNK))


@pytest.mark.parametrize("path", ["/", "/recordings"])
@pytest.mark.parametrize(
    "declared",
    [str(TEN_MB), None, "100"],
    ids=["content-length", "chunked", "lying-content-length"],
)
def test_a_10_mb_body_is_refused_with_413_without_being_read(path: str, declared: str | None) -> None:
    service = RecorderSettings(service_key=SecretStr(new_service_key()), api_keys=SecretStr(API_KEY))
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    if declared is not None:
        headers["content-length"] = declared
    status, pulled, seconds = _post_streamed(create_app(service), path, headers, _ten_mb())
    assert status == 413
    # A declared 10 MB is refused before any byte is read; otherwise at the first chunk past the limit.
    assert pulled == (0 if declared == str(TEN_MB) else MAX_REQUEST_BYTES + CHUNK)
    assert seconds < 2.0


def test_a_10_mb_body_without_a_key_is_refused_with_401_without_being_read() -> None:
    service = RecorderSettings(service_key=SecretStr(new_service_key()), api_keys=SecretStr(API_KEY))
    status, pulled, _ = _post_streamed(create_app(service), "/", {"x-api-key": "wrong"}, _ten_mb())
    assert (status, pulled) == (401, 0)


def test_a_body_is_refused_from_one_byte_over_the_limit() -> None:
    service = RecorderSettings(service_key=SecretStr(new_service_key()))
    # A request that is not valid (RoomId 0), padded with spaces: JSON ignores them.
    request = json.dumps(_request(RoomId=0)).encode()
    with TestClient(create_app(service)) as client:
        at_limit = client.post("/", content=request + b" " * (MAX_REQUEST_BYTES - len(request)))
        over = client.post("/", content=request + b" " * (MAX_REQUEST_BYTES + 1 - len(request)))
        ten_mb = client.post("/recordings", content=b"[" * TEN_MB)
    assert at_limit.status_code == 422
    assert over.status_code == 413 and over.json() == {
        "error": f"a recording request is at most {MAX_REQUEST_BYTES} bytes"
    }
    assert ten_mb.status_code == 413


def test_json_nested_deeper_than_the_parser_goes_is_400_not_500() -> None:
    """What the gateway fuzzing above finds without the fix: "[[[[..." a few thousand deep
    (well inside the size limit) makes json.loads raise RecursionError, not ValueError, and
    the gateway answered 500."""
    with TestClient(create_app(RecorderSettings()), raise_server_exceptions=False) as client:
        for body in (b"[" * 50_000, b'{"a":' * 12_000):
            answer = client.post("/", content=body)
            assert answer.status_code == 400 and "not JSON" in answer.json()["error"], answer.text
