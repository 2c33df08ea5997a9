from __future__ import annotations

from prefect import get_run_logger, task

from recorder.callback import post_result
from recorder.result import ResultDocument
from recorder.settings import RecorderSettings


@task(name="callback", persist_result=True)
def send_callback(url: str, document: ResultDocument) -> int:
    """POST the result document; retries live in `post_result` (backoff, no retry on 4xx)."""
    settings = RecorderSettings()
    status = post_result(
        url,
        document,
        attempts=settings.callback_attempts,
        timeout=settings.callback_timeout_seconds,
        backoff=settings.callback_backoff_seconds,
    )
    get_run_logger().info("callback to %s answered HTTP %s", url, status)
    return status
