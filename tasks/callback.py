from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from recorder.callback import deliver_result, describe_url
from recorder.result import ResultDocument
from recorder.settings import RecorderSettings


# persist_result: with the default cache policy (inputs, task source, flow run id) a retried
# flow run takes a callback that completed from its cache instead of sending it again; one
# that failed is sent again, under the same Idempotency-Key when the document is the same.
@task(name="callback", persist_result=True)
def send_callback(url: str, document: ResultDocument) -> int:
    """POST the result document: retries, deadline, signature and Idempotency-Key are
    `deliver_result`'s (RECORDER_CALLBACK_*); the key names this flow run and this result."""
    logger = get_run_logger(room=document.StrRoomId or document.RoomId)
    status = deliver_result(url, document, RecorderSettings(), run_id=flow_run.get_id(), logger=logger)
    logger.info("callback to %s answered HTTP %s", describe_url(url), status)
    return status
