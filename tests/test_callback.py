"""post_result against real HTTP servers on loopback (answering from a scripted list, hanging,
dripping, refusing), the signature and idempotency headers, and the callback step in real
Prefect flow runs: not repeated once it succeeded, the result kept when it fails."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from uuid import UUID

import pytest
from prefect import flow, get_client
from prefect.runtime import flow_run
from pydantic import SecretStr

from flows.record_room import run_request
from flows.runs import read_recording
from recorder.callback import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackError,
    idempotency_key_for,
    post_result,
    sign_callback,
    verify_callback,
)
from recorder.request import parse_request
from recorder.result import FileEntry, ResultDocument
from recorder.rooms.sim import SimRoom
from recorder.rooms.sim_script import SimAnchor, SimScript
from tasks.callback import send_callback
from tests.conftest import Dirs
from tests.http_receiver import Receiver as PlainReceiver
from tests.loopback_server import LoopbackHTTPServer
from tests.prefect_records import assert_secrets_absent, task_run_states

HANG = -1  # scripted "status": read the request, then never answer (until teardown)
DRIP = -2  # scripted "status": answer one byte of the status line at a time, never finishing
HOLD_SECONDS = 3.0  # a hanging or dripping handler gives up by itself after this long
KEY = SecretStr("callback-key-NEVER-LOGGED-51d2")
RESPONSE_SECRET = b"response-body-NEVER-IN-ERRORS"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class Receiver:
    """The loopback callback receiver: what it got, and what it answers next."""

    url: str = ""
    script: list[int] = field(default_factory=lambda: [200])
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Recorded) -> int:
        """Keep `request`; answer with the next scripted status (the last one repeats)."""
        with self.lock:
            self.requests.append(request)
            return self.script[min(len(self.requests), len(self.script)) - 1]

    def wait_for_requests(self, count: int, timeout: float = 1.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.record(Recorded(self.command, self.path, headers, body, time.monotonic()))
            if status == HANG:
                receiver.release.wait(HOLD_SECONDS)
                self.close_connection = True
                return
            if status == DRIP:
                # Each byte comes well within any read timeout; only a bound on the whole
                # exchange ends this. The client hanging up ends it too (a write fails).
                stop = time.monotonic() + HOLD_SECONDS
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 10_000:
                    if receiver.release.wait(0.05) or time.monotonic() > stop:
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                self.close_connection = True
                return
            payload = b'{"detail": "' + RESPONSE_SECRET + b'"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet

    return Handler


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours proxy variables; the receiver is on loopback and must be reached directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    server = LoopbackHTTPServer(("127.0.0.1", 0), _handler_for(rec))
    host, port = server.server_address[:2]
    rec.url = f"http://{host}:{port}/callback?token=query-NEVER-IN-ERRORS"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.stopping.set()
        rec.release.set()  # let a hanging or dripping handler return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def document() -> ResultDocument:
    return ResultDocument(
        SdkAppId="1400000001",
        RoomId="",
        StrRoomId="room-é 1",
        UserId="recorder_1",
        Files=[
            FileEntry(UserId="alice", RecordFile="/rec/alice.mp4", Status=1, Message="ok"),
            FileEntry(UserId="bob", RecordFile="", Status=0, Message="stream never started"),
        ],
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_clean(message: str, document: ResultDocument) -> None:
    """An error names the receiver but not its query (tokens live there), the key, or either body."""
    assert "/callback" in message
    assert "NEVER" not in message
    assert document.Files[0].RecordFile not in message


# --- delivery, retries and the deadline, over real sockets ----------------------------------


def test_success_first_time_posts_the_document_once(receiver: Receiver, document: ResultDocument) -> None:
    sleeps: list[float] = []

    status = post_result(receiver.url, document, attempts=3, timeout=2.0, backoff=0.5, sleep=sleeps.append)

    assert status == 200
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.method == "POST"
    assert request.path == "/callback?token=query-NEVER-IN-ERRORS"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "trtc-recorder"
    assert json.loads(request.body) == document.model_dump(mode="json")
    # Without a key: unsigned, but still an idempotency key (the body's digest).
    assert request.headers[IDEMPOTENCY_HEADER.lower()] == idempotency_key_for(request.body)
    assert TIMESTAMP_HEADER.lower() not in request.headers
    assert SIGNATURE_HEADER.lower() not in request.headers
    assert sleeps == []


def test_server_errors_are_retried_with_one_idempotency_key_and_a_verifiable_signature(
    receiver: Receiver, document: ResultDocument
) -> None:
    receiver.script = [500, 500, 200]
    sleeps: list[float] = []

    status = post_result(
        receiver.url,
        document,
        attempts=5,
        timeout=2.0,
        backoff=0.25,
        deadline=30.0,
        key=KEY,
        idempotency_key="run-7:abc",
        sleep=sleeps.append,
    )

    assert status == 200
    assert len(receiver.requests) == 3
    assert sleeps == [0.25, 0.5]
    assert {r.body for r in receiver.requests} == {document.model_dump_json().encode()}
    assert {r.headers[IDEMPOTENCY_HEADER.lower()] for r in receiver.requests} == {"run-7:abc"}
    for request in receiver.requests:
        body, timestamp = request.body, request.headers[TIMESTAMP_HEADER.lower()]
        signature = request.headers[SIGNATURE_HEADER.lower()]
        now = time.time()
        assert abs(now - int(timestamp)) < 5
        assert signature == sign_callback(body, KEY, int(timestamp))
        assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
        assert verify_callback(body, timestamp, signature, KEY, now)
        # Another key, a changed body or a changed timestamp: refused.
        assert not verify_callback(body, timestamp, signature, SecretStr("another key"), now)
        assert not verify_callback(body.replace(b"alice", b"mallory"), timestamp, signature, KEY, now)
        assert not verify_callback(body, str(int(timestamp) + 1), signature, KEY, now)
        # The same callback replayed later than the tolerance (300 s after it was signed): refused.
        signed = int(timestamp)
        assert not verify_callback(body, timestamp, signature, KEY, signed + 301)
        assert verify_callback(body, timestamp, signature, KEY, signed + 299)


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (None, "sha256=00"),
        ("1700000000", None),
        ("", ""),
        ("17e8", "sha256=00"),
        ("-1700000000", "sha256=00"),
        ("²", "sha256=00"),
        ("9" * 5000, "sha256=00"),
        ("1700000000", "sha256=✗ not hex"),
    ],
)
def test_malformed_signature_headers_are_refused_without_an_exception(
    timestamp: str | None, signature: str | None
) -> None:
    assert not verify_callback(b"{}", timestamp, signature, KEY, 1_700_000_000)


def test_too_many_requests_is_retried(receiver: Receiver, document: ResultDocument) -> None:
    receiver.script = [429, 201]
    sleeps: list[float] = []

    status = post_result(receiver.url, document, attempts=3, timeout=2.0, backoff=1.5, sleep=sleeps.append)

    assert status == 201
    assert len(receiver.requests) == 2
    assert sleeps == [1.5]


@pytest.mark.parametrize("rejection", [400, 404, 302])
def test_client_errors_are_not_retried(receiver: Receiver, document: ResultDocument, rejection: int) -> None:
    receiver.script = [rejection, 200]
    sleeps: list[float] = []

    with pytest.raises(CallbackError) as caught:
        post_result(
            receiver.url, document, attempts=4, timeout=2.0, backoff=0.1, key=KEY, sleep=sleeps.append
        )

    message = str(caught.value)
    assert "rejected" in message
    assert f"HTTP {rejection}" in message
    _assert_clean(message, document)
    assert len(receiver.requests) == 1
    assert sleeps == []


def test_persistent_server_error_gives_up_after_all_attempts(
    receiver: Receiver, document: ResultDocument
) -> None:
    receiver.script = [500]
    sleeps: list[float] = []

    with pytest.raises(CallbackError) as caught:
        post_result(
            receiver.url, document, attempts=3, timeout=2.0, backoff=0.1, key=KEY, sleep=sleeps.append
        )

    message = str(caught.value)
    assert "after 3 attempts in " in message
    assert message.endswith(": HTTP 500")
    _assert_clean(message, document)
    assert len(receiver.requests) == 3
    assert sleeps == [0.1, 0.2]  # no sleep after the last attempt


def test_connection_refused_fails_after_all_attempts(document: ResultDocument) -> None:
    url = f"http://127.0.0.1:{_free_port()}/callback?token=query-NEVER-IN-ERRORS"

    began = time.monotonic()
    with pytest.raises(CallbackError) as caught:
        post_result(url, document, attempts=3, timeout=1.0, backoff=0.05, deadline=5.0, key=KEY)
    elapsed = time.monotonic() - began

    message = str(caught.value)
    assert "after 3 attempts in " in message
    assert "ConnectError" in message
    assert "deadline" not in message  # the attempts ran out, not the time
    _assert_clean(message, document)
    assert 0.15 <= elapsed < 1.0  # the real backoff (0.05 + 0.1 s), refusals are immediate


def test_hanging_receiver_costs_a_timeout_per_attempt_and_the_deadline_overall(
    receiver: Receiver, document: ResultDocument
) -> None:
    # 0.3 s per attempt, 0.8 s overall, 10 attempts allowed, and the receiver would hold
    # each for 3 s: attempts at 0, 0.35 (after a 0.05 s pause) and 0.75 s (after 0.1 s, with
    # the 0.05 s left); on a busy machine the third may find no time left.
    receiver.script = [HANG]

    began = time.monotonic()
    with pytest.raises(CallbackError) as caught:
        post_result(receiver.url, document, attempts=10, timeout=0.3, backoff=0.05, deadline=0.8, key=KEY)
    elapsed = time.monotonic() - began

    message = str(caught.value)
    made = re.search(
        r"after ([23]) attempts in 0\.[789] s; the 0\.8 s deadline allowed no more: no answer within", message
    )
    assert made, message
    assert "Timeout" in message
    _assert_clean(message, document)
    assert 0.75 <= elapsed < 1.2, elapsed
    arrivals = [r.at - began for r in receiver.wait_for_requests(int(made.group(1)))]
    assert len(arrivals) == int(made.group(1))
    assert arrivals[-1] < 0.8  # no attempt starts after the deadline


def test_a_receiver_dripping_its_answer_is_cut_off_at_the_timeout(
    receiver: Receiver, document: ResultDocument
) -> None:
    # A byte every 0.05 s never trips a per-read timeout of 0.3 s: the attempt as a whole must end.
    receiver.script = [DRIP]

    began = time.monotonic()
    with pytest.raises(CallbackError) as caught:
        post_result(receiver.url, document, attempts=1, timeout=0.3, backoff=0.0)
    elapsed = time.monotonic() - began

    assert "after 1 attempt in " in str(caught.value)
    assert "no answer within 0.3 s" in str(caught.value)
    assert 0.25 <= elapsed < 0.7, elapsed


def test_the_deadline_cuts_a_long_backoff_so_one_last_attempt_fits(
    receiver: Receiver, document: ResultDocument
) -> None:
    # A 30 s backoff against a 1 s deadline: the pause is cut to 1 - 0.4 = 0.6 s, leaving the
    # last attempt its full 0.4 s timeout; it gets through.
    receiver.script = [500, 200]

    began = time.monotonic()
    status = post_result(receiver.url, document, attempts=4, timeout=0.4, backoff=30.0, deadline=1.0)
    elapsed = time.monotonic() - began

    assert status == 200
    assert 0.55 <= elapsed < 0.9, elapsed
    first, second = receiver.requests
    assert first.at - began < 0.3
    assert second.at - began == pytest.approx(0.6, abs=0.1)  # the deadline less one timeout


def test_after_the_cut_pause_the_delivery_ends(receiver: Receiver, document: ResultDocument) -> None:
    # The same, with a receiver that keeps failing: two attempts, then the error, at once
    # (not 4 attempts, and not a wait to the deadline or through the backoff).
    receiver.script = [503]

    began = time.monotonic()
    with pytest.raises(CallbackError) as caught:
        post_result(receiver.url, document, attempts=4, timeout=0.4, backoff=30.0, deadline=1.0)
    elapsed = time.monotonic() - began

    assert re.search(
        r"after 2 attempts in 0\.[67] s; the 1 s deadline allowed no more: HTTP 503$", str(caught.value)
    )
    assert 0.55 <= elapsed < 0.9, elapsed
    assert len(receiver.requests) == 2


def test_post_result_works_where_an_event_loop_is_running(
    receiver: Receiver, document: ResultDocument
) -> None:
    # Prefect may call a sync hook from inside its loop, where asyncio.run alone is refused.
    async def inside_a_loop() -> int:
        return post_result(receiver.url, document, attempts=1, timeout=2.0, backoff=0.0)

    assert asyncio.run(inside_a_loop()) == 200


# --- the callback step in real Prefect flow runs --------------------------------------------


def _header(received: Any, name: str) -> str:
    return next(v for k, v in received.headers.items() if k.lower() == name.lower())


@flow(name="callback-then-fail-once", retries=1, retry_delay_seconds=0)
def _callback_then_fail_once(url: str, document: ResultDocument) -> int:
    status = send_callback(url, document)
    if flow_run.get_run_count() == 1:
        raise RuntimeError("the first run fails after its callback succeeded")
    return status


def test_a_retried_run_does_not_repeat_a_callback_that_succeeded(
    prefect_api: None, document: ResultDocument, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDER_CALLBACK_KEY", KEY.get_secret_value())
    with PlainReceiver() as received_by:
        state = _callback_then_fail_once(received_by.url, document, return_state=True)

    assert state.is_completed(), state.message
    (posted,) = received_by.received
    # One callback task run per flow run attempt: the second took the first one's result.
    callback_runs = [
        s for name, states in task_run_states(state).items() if name.startswith("callback") for s in states
    ]
    assert sorted(callback_runs) == ["Cached", "Completed"]
    run_id = state.state_details.flow_run_id
    assert _header(posted, IDEMPOTENCY_HEADER) == idempotency_key_for(posted.body, str(run_id))
    assert verify_callback(
        posted.body, _header(posted, TIMESTAMP_HEADER), _header(posted, SIGNATURE_HEADER), KEY, time.time()
    )


def test_a_failing_callback_leaves_the_result_on_the_run(dirs: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_CALLBACK_KEY", KEY.get_secret_value())
    monkeypatch.setenv("RECORDER_CALLBACK_ATTEMPTS", "3")
    monkeypatch.setenv("RECORDER_CALLBACK_BACKOFF_SECONDS", "0.1")
    monkeypatch.setenv("RECORDER_CALLBACK_DEADLINE_SECONDS", "5")
    script = SimScript(anchors=[SimAnchor(user_id="teacher", leave=1.5)])
    with PlainReceiver(statuses=[500]) as received_by:
        request = parse_request(
            {
                "SdkAppId": 1400000000,
                "RoomId": 80001,
                "UserId": "recorder_1",
                "UserSig": "sig",
                "CosConfig": {"Region": "ap-shanghai", "Bucket": "test-123456789"},
                "Callback": received_by.url,
                "Mode": "00",
                "MaxIdleTime": 1,
            }
        )
        with SimRoom(request.SdkAppId, request.room, script):
            document, state = run_request(request)

    assert state.is_failed()
    assert "failed after 3 attempts in " in (state.message or "")
    assert "HTTP 500" in (state.message or "")
    assert [(f.UserId, f.Status) for f in document.Files] == [("teacher", 1)]
    # The same document, three times, under one key that names the run.
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    assert [r.json() for r in received_by.received] == [document.model_dump(mode="json")] * 3
    keys = {_header(r, IDEMPOTENCY_HEADER) for r in received_by.received}
    assert keys == {idempotency_key_for(received_by.received[0].body, str(run_id))}
    # What the gateway answers for the run (GET /recordings/{id}) still has the result.
    recording = asyncio.run(_read_recording(run_id))
    assert recording.final and recording.result == document
    assert_secrets_absent(run_id, [KEY.get_secret_value()], expect_in_logs="callback attempt 1 of 3")


async def _read_recording(run_id: UUID) -> Any:
    async with get_client() as client:
        return await read_recording(client, run_id)
