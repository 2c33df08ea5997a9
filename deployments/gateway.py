"""The HTTP gateway: the original's trigger (an API gateway in front of an async
function), in front of Prefect.

    POST /  or  POST /recordings      the request, exactly as the original takes it
        202 "Async run task submitted"; the flow run id in `x-request-id` (the
        original's x-scf-reqid). JSON instead when the client accepts only JSON.
    GET  /recordings/{id}             state, and the result document once there is one
    POST /recordings/{id}/stop        end the recording now; the files are still delivered
    POST /trtc/callback               TRTC's room and media callbacks: each room's roster (who
        is an anchor, dismissed, removed) in a Prefect Variable the recordings read. No API
        key (TRTC cannot send one): the Sign header, HMAC-SHA256 of the body under
        RECORDER_TRTC_CALLBACK_KEY, is the authentication
    GET  /metrics                     Prometheus metrics (deployments/metrics.py), read from the
        Prefect API at each scrape; not in the OpenAPI document (it is not the recording API)
    GET  /health                      liveness, no key needed

With RECORDER_API_KEYS set, every call but /health and /trtc/callback needs one of them, as
`Authorization: Bearer KEY` or `X-Api-Key: KEY`; `recorder serve` refuses to listen beyond
loopback without keys. /metrics too: give Prometheus the key as its scrape config's
`authorization: {credentials: KEY}` (sent as `Authorization: Bearer KEY`).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prefect import get_client
from prefect.exceptions import ObjectNotFound
from prometheus_client import CONTENT_TYPE_LATEST

from deployments.metrics import GatewayMetrics, RequestOutcomes
from flows.room_roster import record_room_event
from flows.runs import RunFinishedError, read_recording, request_stop, start_recording
from recorder.request import RecordingRequest, RequestError, parse_request
from recorder.room_events import ROSTER_EVENTS, parse_room_event, verify_callback_sign
from recorder.settings import RecorderSettings

log = logging.getLogger(__name__)

SUBMITTED = "Async run task submitted"
REQUEST_ID_HEADER = "x-request-id"
TRTC_CALLBACK_PATH = "/trtc/callback"
# TRTC's callbacks are well under 1 KB; the endpoint is open, so it reads no more than this.
MAX_CALLBACK_BYTES = 64 * 1024
# A request is a few KB at most (50 Anchors of 32 characters, a UserSig of some hundred):
# a bigger body is refused before it is read, so a client cannot make the gateway buffer megabytes.
MAX_REQUEST_BYTES = 64 * 1024


def _api_keys(settings: RecorderSettings) -> list[bytes]:
    if settings.api_keys is None:
        return []
    return [k.strip().encode() for k in settings.api_keys.get_secret_value().split(",") if k.strip()]


def create_app(settings: RecorderSettings | None = None, metrics: GatewayMetrics | None = None) -> FastAPI:
    settings = settings or RecorderSettings()
    metrics = metrics or GatewayMetrics()
    keys = _api_keys(settings)

    def authorised(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> None:
        if not keys:
            return
        offered = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        # Compare with every key, in constant time, so timing tells nothing about them.
        matched = [hmac.compare_digest(offered.encode(), key) for key in keys]
        if not offered or not any(matched):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="trtc-recorder")
    app.add_middleware(RequestOutcomes, metrics=metrics, paths=frozenset({"/", "/recordings"}))
    guarded = [Depends(authorised)]

    @app.exception_handler(HTTPException)
    async def _error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/metrics", dependencies=guarded, include_in_schema=False)
    async def metrics_page() -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def submit(request: Request) -> Response:
        data = await _read_limited(request, MAX_REQUEST_BYTES, "a recording request")
        try:
            raw: Any = json.loads(data)
        # RecursionError: JSON nested a few thousand levels deep ("[[[[..."), which fits in the limit.
        except (ValueError, RecursionError) as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        try:
            recording = parse_request(raw)
        except RequestError as exc:
            return JSONResponse({"error": "invalid request", "problems": exc.problems}, 422)
        async with get_client() as client:
            started = await start_recording(client, recording, settings)
        headers = {REQUEST_ID_HEADER: str(started.run_id)}
        if _wants_json(request):
            body = {
                "Message": SUBMITTED,
                "RequestId": str(started.run_id),
                "AlreadyRunning": started.already_running,
            }
            return JSONResponse(body, 202, headers=headers)
        return PlainTextResponse(SUBMITTED, 202, headers=headers)

    # The body is read by hand (to cap its size, and to name every bad field in the answer),
    # so FastAPI would not document it: the request model describes it instead.
    submit_doc = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _request_schema()}}}
    }
    app.post("/", dependencies=guarded, openapi_extra=submit_doc)(submit)
    app.post("/recordings", dependencies=guarded, openapi_extra=submit_doc)(submit)

    @app.get("/recordings/{run_id}", dependencies=guarded)
    async def status(run_id: UUID) -> dict[str, Any]:
        async with get_client() as client:
            try:
                found = await read_recording(client, run_id)
            except ObjectNotFound:
                raise HTTPException(404, f"no recording {run_id}") from None
        result = found.result.model_dump(mode="json") if found.result else None
        return {
            "RequestId": str(run_id),
            "State": found.state,
            "Final": found.final,
            # Not started yet: every worker holds as many recordings as it may.
            "Queued": found.queued,
            "Result": result,
        }

    @app.post("/recordings/{run_id}/stop", dependencies=guarded, status_code=202)
    async def stop(run_id: UUID) -> dict[str, Any]:
        async with get_client() as client:
            try:
                state = await request_stop(client, run_id)
            except ObjectNotFound:
                raise HTTPException(404, f"no recording {run_id}") from None
            except RunFinishedError as exc:
                raise HTTPException(409, str(exc)) from None
        return {"RequestId": str(run_id), "State": state, "Message": "stopping: the files will be delivered"}

    @app.post(TRTC_CALLBACK_PATH)
    async def trtc_callback(request: Request) -> dict[str, Any]:
        # TRTC wants HTTP 200 (its body is ignored; {"code": 0} is its suggestion) within 5 s,
        # and retries anything else for a minute.
        key = settings.trtc_callback_key
        # An empty key would let anyone sign: the same as none.
        if key is None or not key.get_secret_value():
            raise HTTPException(
                503,
                "TRTC callbacks are not accepted: set RECORDER_TRTC_CALLBACK_KEY (the callback key "
                "of the TRTC console)",
            )
        body = await _read_limited(request, MAX_CALLBACK_BYTES, "a TRTC callback")
        if not verify_callback_sign(body, request.headers.get("sign"), key):
            log.warning("TRTC callback refused: missing or wrong Sign")
            raise HTTPException(401, "missing or wrong Sign")
        app_id = _sdk_app_id(request.headers.get("sdkappid"))
        if app_id is None:
            raise HTTPException(400, "the SdkAppId header must be the application's id, an integer")
        try:
            event = parse_room_event(body)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if event.EventType not in ROSTER_EVENTS:
            return {"code": 0, "EventType": event.EventType, "Recorded": False}
        async with get_client() as client:
            await record_room_event(client, app_id, event)
        return {"code": 0, "EventType": event.EventType, "Recorded": True}

    return app


def _sdk_app_id(header: str | None) -> int | None:
    """The SdkAppId header as an integer (1 to 4294967295, as a request's), else None."""
    if header is None or not header.isascii() or not header.isdigit() or len(header) > 10:
        return None
    value = int(header)
    return value if 1 <= value <= 4294967295 else None


async def _read_limited(request: Request, limit: int, what: str) -> bytes:
    """The body, or 413 once it is longer than `limit` (without reading the rest)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} is at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    # Counted as it arrives: a chunked body has no Content-Length, and a declared one may lie.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} is at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_schema() -> dict[str, Any]:
    """RecordingRequest's JSON schema with its definitions written in place: the OpenAPI
    document has no `$defs` for a `#/$defs/...` reference to point into."""
    schema = RecordingRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            rest = {key: inline(value) for key, value in node.items() if key != "$ref"}
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")]) | rest
            return rest if ref is None else node
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/plain" not in accept
