"""The HTTP gateway in front of Prefect: in-process ASGI calls, a real (temporary) Prefect API.

No worker runs here, so runs stay Scheduled: these tests are about what the gateway
creates, refuses and reports. The whole service, worker included, is in
test_service_integration.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.states import Completed
from pydantic import SecretStr

from deployments.gateway import REQUEST_ID_HEADER, SUBMITTED, create_app
from flows.runs import STOP_TAG, publish_result
from recorder.request import parse_request
from recorder.result import FileEntry, ResultDocument
from recorder.sealing import new_service_key, unseal_secrets
from recorder.settings import RecorderSettings

API_KEY = "gateway-key-1a2b3c"
USER_SIG = "sig-GATEWAY-NEVER-3d4e"
SECRET_KEY = "cos-GATEWAY-NEVER-5f6a"


@pytest.fixture
def settings(deployment_id: UUID) -> RecorderSettings:
    return RecorderSettings(
        service_key=SecretStr(new_service_key()), api_keys=SecretStr(f"other-key, {API_KEY}")
    )


@pytest.fixture
def gateway(settings: RecorderSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client


def _request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "SdkAppId": 1400000000,
        "RoomId": 8001,
        "UserId": "recorder_1",
        "UserSig": USER_SIG,
        "CosConfig": {
            "Region": "ap-guangzhou",
            "Bucket": "class-1250000000",
            "Path": "/trtc",
            "SecretId": "AKIDgateway",
            "SecretKey": SECRET_KEY,
        },
        "Callback": "http://127.0.0.1:9/never-called",
        "Mode": "02",
    }
    return request | changes


def _runs() -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs())


def _finish(run_id: UUID) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Completed(), force=True)


def test_no_key_or_a_wrong_key_is_401_and_creates_nothing(gateway: TestClient) -> None:
    before = len(_runs())
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-a-key"}, {"X-Api-Key": "nope"}):
        answer = gateway.post("/", json=_request(), headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "missing or invalid API key"}
    assert len(_runs()) == before
    assert gateway.get("/health", headers={"Authorization": ""}).json() == {"ok": True}


def test_a_bad_field_is_422_naming_it_and_creates_nothing(gateway: TestClient) -> None:
    before = len(_runs())
    answer = gateway.post("/recordings", json=_request(RoomId=0, Mode="09"))
    assert answer.status_code == 422
    problems = answer.json()["problems"]
    assert any(p.startswith("RoomId: ") for p in problems) and any(p.startswith("Mode: ") for p in problems)
    assert USER_SIG not in answer.text
    not_json = gateway.post("/", content=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert len(_runs()) == before


def test_a_request_becomes_a_run_whose_parameters_hold_no_secret(
    gateway: TestClient, settings: RecorderSettings
) -> None:
    answer = gateway.post("/", json=_request(RoomId=8101), headers={"X-Api-Key": API_KEY})
    assert (answer.status_code, answer.text) == (202, SUBMITTED)
    run_id = UUID(answer.headers[REQUEST_ID_HEADER])
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    stored = json.dumps(run.parameters)
    assert USER_SIG not in stored and SECRET_KEY not in stored
    assert run.parameters["request"]["UserSig"] == "**********"
    # The seal is real: with the service key, a worker gets the secrets back.
    opened = unseal_secrets(
        parse_request(run.parameters["request"]), run.parameters["sealed_secrets"], settings.service_key
    )
    assert opened.UserSig.get_secret_value() == USER_SIG
    assert (
        opened.CosConfig.SecretKey is not None and opened.CosConfig.SecretKey.get_secret_value() == SECRET_KEY
    )
    _finish(run_id)


def test_the_same_recording_twice_is_the_same_run_until_it_ends(gateway: TestClient) -> None:
    first = gateway.post("/", json=_request(RoomId=8201), headers={"Accept": "application/json"})
    assert first.status_code == 202
    body = first.json()
    assert body["Message"] == SUBMITTED and body["AlreadyRunning"] is False
    run_id = body["RequestId"]
    assert first.headers[REQUEST_ID_HEADER] == run_id

    again = gateway.post("/", json=_request(RoomId=8201, Mode="00"), headers={"Accept": "application/json"})
    assert again.json()["RequestId"] == run_id and again.json()["AlreadyRunning"] is True
    other_recorder = gateway.post("/", json=_request(RoomId=8201, UserId="recorder_2"))
    assert other_recorder.headers[REQUEST_ID_HEADER] != run_id
    assert len([r for r in _runs() if str(r.id) == run_id]) == 1

    _finish(UUID(run_id))
    after = gateway.post("/", json=_request(RoomId=8201))
    assert after.headers[REQUEST_ID_HEADER] not in (run_id, other_recorder.headers[REQUEST_ID_HEADER])
    _finish(UUID(other_recorder.headers[REQUEST_ID_HEADER]))
    _finish(UUID(after.headers[REQUEST_ID_HEADER]))


def test_status_then_the_result_document(gateway: TestClient) -> None:
    run_id = UUID(gateway.post("/", json=_request(RoomId=8301)).headers[REQUEST_ID_HEADER])
    status = gateway.get(f"/recordings/{run_id}").json()
    assert status == {
        "RequestId": str(run_id),
        "State": "Scheduled",
        "Final": False,
        "Queued": True,
        "Result": None,
    }

    document = ResultDocument(
        SdkAppId="1400000000",
        RoomId="8301",
        StrRoomId="",
        UserId="recorder_1",
        Files=[FileEntry(UserId="teacher", RecordFile="https://x/y.mp4", Status=1, Message="ok: 3.0 s")],
    )
    with get_client(sync_client=True) as client:
        publish_result(client, run_id, document)
    _finish(run_id)
    status = gateway.get(f"/recordings/{run_id}").json()
    assert status["State"] == "Completed" and status["Final"] is True
    assert ResultDocument.model_validate(status["Result"]) == document
    assert gateway.get("/recordings/00000000-0000-0000-0000-000000000000").status_code == 404
    assert gateway.get(f"/recordings/{run_id}", headers={"Authorization": ""}).status_code == 401


def test_stop_tags_a_running_recording_and_refuses_a_finished_one(gateway: TestClient) -> None:
    run_id = UUID(gateway.post("/", json=_request(RoomId=8401)).headers[REQUEST_ID_HEADER])
    answer = gateway.post(f"/recordings/{run_id}/stop")
    assert answer.status_code == 202 and answer.json()["RequestId"] == str(run_id)

    async def tags() -> list[str]:
        async with get_client() as client:
            return list((await client.read_flow_run(run_id)).tags)

    assert STOP_TAG in asyncio.run(tags())
    _finish(run_id)
    assert gateway.post(f"/recordings/{run_id}/stop").status_code == 409
    assert gateway.post("/recordings/00000000-0000-0000-0000-000000000000/stop").status_code == 404


def test_an_open_gateway_on_loopback_needs_no_key(deployment_id: UUID) -> None:
    open_settings = RecorderSettings(service_key=SecretStr(new_service_key()))
    with TestClient(create_app(open_settings)) as client:
        answer = client.post("/", json=_request(RoomId=8501))
    assert answer.status_code == 202
    _finish(UUID(answer.headers[REQUEST_ID_HEADER]))
