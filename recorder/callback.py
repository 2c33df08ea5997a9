"""POST the result document to the request's Callback, with retries and backoff."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from recorder.result import ResultDocument


class CallbackError(RuntimeError):
    """Every attempt failed; the message says how the last one did."""


def post_result(
    url: str,
    document: ResultDocument,
    *,
    attempts: int,
    timeout: float,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Deliver `document`; return the receiver's HTTP status.

    Connection errors, timeouts, 5xx, 408 and 429 are retried after backoff, 2x longer
    each time; any other 4xx (or a redirect) means the receiver rejects the document and is not retried.
    """
    body = document.model_dump_json().encode()
    headers = {"Content-Type": "application/json", "User-Agent": "trtc-recorder"}
    last = ""
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for attempt in range(1, attempts + 1):
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return response.status_code
                last = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in (408, 429):
                    raise CallbackError(f"callback to {url} rejected: {last}")
            if attempt < attempts:
                sleep(backoff * 2 ** (attempt - 1))
    raise CallbackError(f"callback to {url} failed after {attempts} attempts: {last}")
