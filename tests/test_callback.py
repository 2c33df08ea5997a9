"""post_result against a real HTTP server on loopback, answering from a scripted list."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recorder.callback import CallbackError, post_result
from recorder.result import FileEntry, ResultDocument

HANG = -1  # scripted "status": read the request, then never answer (until teardown)
HANG_BOUND_SECONDS = 2.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


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
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.record(Recorded(self.command, self.path, headers, body))
            if status == HANG:
                receiver.release.wait(HANG_BOUND_SECONDS)
                self.close_connection = True
                return
            payload = b'{"ok": true}'
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
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(rec))
    host, port = server.server_address[:2]
    rec.url = f"http://{host}:{port}/callback?run=7"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.release.set()  # let a hanging handler return so server_close does not wait on it
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
        return sock.getsockname()[1]


def test_success_first_time_posts_the_document_once(receiver: Receiver, document: ResultDocument) -> None:
    sleeps: list[float] = []

    status = post_result(receiver.url, document, attempts=3, timeout=2.0, backoff=0.5, sleep=sleeps.append)

    assert status == 200
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.method == "POST"
    assert request.path == "/callback?run=7"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "trtc-recorder"
    assert json.loads(request.body) == document.model_dump(mode="json")
    assert sleeps == []


def test_server_errors_are_retried_with_doubling_backoff(
    receiver: Receiver, document: ResultDocument
) -> None:
    receiver.script = [500, 503, 200]
    sleeps: list[float] = []

    status = post_result(receiver.url, document, attempts=5, timeout=2.0, backoff=0.25, sleep=sleeps.append)

    assert status == 200
    assert len(receiver.requests) == 3
    assert sleeps == [0.25, 0.5]
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1  # every attempt sends the same document


def test_too_many_requests_is_retried(receiver: Receiver, document: ResultDocument) -> None:
    receiver.script = [429, 201]
    sleeps: list[float] = []

    status = post_result(receiver.url, document, attempts=3, timeout=2.0, backoff=1.5, sleep=sleeps.append)

    assert status == 201
    assert len(receiver.requests) == 2
    assert sleeps == [1.5]


@pytest.mark.parametrize("rejection", [400, 404])
def test_client_errors_are_not_retried(receiver: Receiver, document: ResultDocument, rejection: int) -> None:
    receiver.script = [rejection, 200]
    sleeps: list[float] = []

    with pytest.raises(CallbackError) as caught:
        post_result(receiver.url, document, attempts=4, timeout=2.0, backoff=0.1, sleep=sleeps.append)

    message = str(caught.value)
    assert "rejected" in message
    assert str(rejection) in message
    assert receiver.url in message
    assert len(receiver.requests) == 1
    assert sleeps == []


def test_persistent_server_error_gives_up_after_all_attempts(
    receiver: Receiver, document: ResultDocument
) -> None:
    receiver.script = [500]
    sleeps: list[float] = []

    with pytest.raises(CallbackError) as caught:
        post_result(receiver.url, document, attempts=3, timeout=2.0, backoff=0.1, sleep=sleeps.append)

    message = str(caught.value)
    assert receiver.url in message
    assert "3 attempts" in message
    assert "500" in message
    assert len(receiver.requests) == 3
    assert sleeps == [0.1, 0.2]  # no sleep after the last attempt


def test_connection_refused_fails_after_all_attempts(document: ResultDocument) -> None:
    url = f"http://127.0.0.1:{_free_port()}/callback"
    sleeps: list[float] = []

    with pytest.raises(CallbackError) as caught:
        post_result(url, document, attempts=3, timeout=1.0, backoff=0.05, sleep=sleeps.append)

    message = str(caught.value)
    assert url in message
    assert "3 attempts" in message
    assert "ConnectError" in message
    assert sleeps == [0.05, 0.1]


def test_hanging_receiver_times_out_on_every_attempt(receiver: Receiver, document: ResultDocument) -> None:
    receiver.script = [HANG]
    sleeps: list[float] = []

    began = time.monotonic()
    with pytest.raises(CallbackError) as caught:
        post_result(receiver.url, document, attempts=2, timeout=0.3, backoff=0.05, sleep=sleeps.append)
    elapsed = time.monotonic() - began

    message = str(caught.value)
    assert "timeout" in message.lower()
    assert "2 attempts" in message
    assert 0.5 <= elapsed < 1.5  # two 0.3 s timeouts, not the receiver's 2 s hang
    assert sleeps == [0.05]
    assert len(receiver.wait_for_requests(2)) == 2
