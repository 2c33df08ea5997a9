"""POST the result document to the request's Callback.

Retries with doubling backoff, all within a total deadline; signed with HMAC-SHA256 when a
callback key is configured; the same Idempotency-Key on every attempt of one delivery, so a
receiver that got an attempt whose answer was lost can tell the retry is not a new result.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from recorder.result import ResultDocument
from recorder.settings import RecorderSettings

MIN_ATTEMPT_SECONDS = 0.1  # the least time an attempt is started with, before the deadline
TIMESTAMP_HEADER = "X-Recorder-Timestamp"
SIGNATURE_HEADER = "X-Recorder-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# How far a receiver lets a signed timestamp be from its own clock (replays older than this fail).
SIGNATURE_TOLERANCE_SECONDS = 300
# A receiver that is busy or restarting answers these: worth another attempt. Any other 4xx
# (or a redirect) means it refuses this document, and sending it again changes nothing.
RETRYABLE_STATUSES = frozenset({408, 429})

Logger = logging.Logger | logging.LoggerAdapter[Any]
_log = logging.getLogger(__name__)


class CallbackError(RuntimeError):
    """The delivery failed; the message says how many attempts, over how long, and how the
    last one failed (never the bodies sent or received)."""


def sign_callback(body: bytes, key: SecretStr, timestamp: int) -> str:
    """The X-Recorder-Signature value: sha256=<hex HMAC-SHA256(key, "{timestamp}." + body)>.
    The timestamp is signed too, so a captured callback cannot be replayed later as new."""
    mac = hmac.new(key.get_secret_value().encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_callback(
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    key: SecretStr,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """Whether a received callback is ours and recent: the raw body, the two headers as
    received (None when absent), the shared key and the receiver's clock (unix seconds).
    Never raises on malformed headers: they are simply not valid."""
    if timestamp_header is None or signature_header is None:
        return False
    # ASCII digits only (str.isdigit also accepts "²"); a bounded length keeps int() cheap.
    if not (timestamp_header.isascii() and timestamp_header.isdigit() and len(timestamp_header) <= 20):
        return False
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign_callback(body, key, timestamp).encode()
    return hmac.compare_digest(expected, signature_header.strip().encode("utf-8", "replace"))


def idempotency_key_for(body: bytes, run_id: str | None = None) -> str:
    """Stable for one result of one run: the run's id (when there is one) and the body's
    digest. A retried run that arrives at a different result sends it under a new key."""
    digest = hashlib.sha256(body).hexdigest()[:32]
    return f"{run_id}:{digest}" if run_id else digest


def describe_url(url: str) -> str:
    """The callback URL for logs and errors, without user info, query or fragment, where
    receivers often put a token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<the callback URL>"
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def deliver_result(
    url: str,
    document: ResultDocument,
    settings: RecorderSettings,
    *,
    run_id: str | None,
    logger: Logger | None = None,
) -> int:
    """`post_result` as configured (RECORDER_CALLBACK_*), keyed by the run that made the result."""
    return post_result(
        url,
        document,
        attempts=settings.callback_attempts,
        timeout=settings.callback_timeout_seconds,
        backoff=settings.callback_backoff_seconds,
        deadline=settings.callback_deadline_seconds,
        key=settings.callback_key,
        idempotency_key=idempotency_key_for(document.model_dump_json().encode(), run_id),
        logger=logger,
    )


def post_result(
    url: str,
    document: ResultDocument,
    *,
    attempts: int,
    timeout: float,
    backoff: float,
    deadline: float | None = None,
    key: SecretStr | None = None,
    idempotency_key: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    logger: Logger | None = None,
) -> int:
    """Deliver `document`; return the receiver's HTTP status (2xx).

    Connection errors, timeouts, 5xx, 408 and 429 are retried after `backoff`, 2x longer
    each time; any other 4xx (or a redirect) is not retried. `timeout` bounds each attempt
    as a whole (connect, send, the answer's status line and headers), not just each read.
    `deadline` (seconds; None: none) bounds all attempts together: an attempt gets at most
    what is left, none starts after it, and a pause that would reach it is shortened so one
    last attempt still gets a full timeout, after which the delivery ends.
    `idempotency_key` (default: the body's digest) goes on every attempt; with `key`, every
    attempt is signed afresh.
    """
    if attempts < 1 or timeout <= 0 or backoff < 0 or (deadline is not None and deadline <= 0):
        raise ValueError("attempts >= 1, timeout > 0, backoff >= 0 and deadline > 0 are needed")
    body = document.model_dump_json().encode()
    delivery = _Delivery(
        url=url,
        body=body,
        key=key,
        idempotency_key=idempotency_key or idempotency_key_for(body),
        sleep=sleep,
        logger=logger or _log,
    )
    return _in_own_thread(lambda: delivery.run(attempts, timeout, backoff, deadline))


class _Delivery:
    def __init__(
        self,
        *,
        url: str,
        body: bytes,
        key: SecretStr | None,
        idempotency_key: str,
        sleep: Callable[[float], None],
        logger: Logger,
    ) -> None:
        self.url = url
        self.where = describe_url(url)
        self.body = body
        self.key = key
        self.idempotency_key = idempotency_key
        self.sleep = sleep
        self.logger = logger

    def run(self, attempts: int, timeout: float, backoff: float, deadline: float | None) -> int:
        started = time.monotonic()
        # One event loop and one client for every attempt: building a client (its TLS
        # context) is synchronous work a timeout cannot interrupt, so it happens once, here.
        with asyncio.Runner() as runner:
            client = httpx.AsyncClient(follow_redirects=False)
            try:
                return self._retry(
                    lambda budget: runner.run(self._post_once(client, budget)),
                    started,
                    attempts,
                    timeout,
                    backoff,
                    deadline,
                )
            finally:
                runner.run(client.aclose())

    def _retry(
        self,
        post: Callable[[float], int],
        started: float,
        attempts: int,
        timeout: float,
        backoff: float,
        deadline: float | None,
    ) -> int:
        ends = math.inf if deadline is None else started + deadline
        made = 0
        last = ""
        final = False  # the next attempt is the last one the deadline leaves room for
        while made < attempts:
            left = ends - time.monotonic()
            # Less than this left: no receiver across a network answers in it, and the attempt
            # would only add a failure (one started with microseconds left never arrived).
            if left < MIN_ATTEMPT_SECONDS:
                break
            made += 1
            budget = min(timeout, left)
            try:
                status = post(budget)
            except (httpx.HTTPError, TimeoutError) as exc:
                last = _failure(exc, budget)
            else:
                if 200 <= status < 300:
                    return status
                last = f"HTTP {status}"
                if status < 500 and status not in RETRYABLE_STATUSES:
                    raise CallbackError(
                        f"callback to {self.where} rejected: {last} (attempt {made}, not retried)"
                    )
            if made == attempts or final:
                break
            pause = backoff * 2 ** (made - 1)
            left = ends - time.monotonic()
            if pause >= left:
                # The whole pause would reach the deadline: wait only so long that one last
                # attempt gets a full timeout (or all that is left), then stop.
                pause = max(0.0, left - timeout)
                final = True
            self.logger.warning(
                "callback attempt %d of %d to %s failed (%s); next in %.1f s",
                made,
                attempts,
                self.where,
                last,
                pause,
            )
            if pause > 0:
                self.sleep(pause)
        elapsed = time.monotonic() - started
        cut = f"; the {deadline:g} s deadline allowed no more" if made < attempts else ""
        raise CallbackError(
            f"callback to {self.where} failed after {_count(made)} in {elapsed:.1f} s{cut}: {last}"
        )

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "trtc-recorder",
            IDEMPOTENCY_HEADER: self.idempotency_key,
        }
        if self.key is not None:
            # Signed at each attempt: a long series of retries stays within the receiver's
            # tolerance for the timestamp.
            timestamp = int(time.time())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = sign_callback(self.body, self.key, timestamp)
        return headers

    async def _post_once(self, client: httpx.AsyncClient, budget: float) -> int:
        # httpx's timeouts apply to each read and write, so a receiver dripping its answer a
        # byte at a time would never trip them: asyncio.timeout bounds the attempt as a whole.
        # Only the status is needed: the answer's body is never read.
        async with (
            asyncio.timeout(budget),
            client.stream(
                "POST", self.url, content=self.body, headers=self.headers(), timeout=budget
            ) as response,
        ):
            return response.status_code


def _failure(exc: httpx.HTTPError | TimeoutError, budget: float) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no answer within {budget:.3g} s ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _count(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _in_own_thread(work: Callable[[], int]) -> int:
    """Run `work` in a thread of its own: the delivery runs an event loop of its own (for
    asyncio.timeout), which is refused in a thread where a loop is already running, as one
    may be where Prefect calls a hook. Daemon: an interrupted caller does not wait for it."""
    outcome: Future[int] = Future()

    def run() -> None:
        try:
            outcome.set_result(work())
        except BaseException as exc:
            outcome.set_exception(exc)

    threading.Thread(target=run, name="callback-delivery", daemon=True).start()
    return outcome.result()
