"""A request's secrets sealed with the service key: only ciphertext in the run's parameters."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from recorder.request import RecordingRequest, parse_request
from recorder.sealing import SealError, new_service_key, public_parameters, seal_secrets, unseal_secrets

USER_SIG = "sig-SEALED-5b2f"
SECRET_KEY = "cos-SEALED-8e41"


def _request(with_cos_keys: bool = True) -> RecordingRequest:
    cos = {"Region": "ap-guangzhou", "Bucket": "rec-1250000000", "Path": "/p"}
    if with_cos_keys:
        cos |= {"SecretId": "AKIDsealed", "SecretKey": SECRET_KEY}
    return parse_request(
        {"SdkAppId": 1400000000, "RoomId": 7, "UserId": "rec", "UserSig": USER_SIG, "CosConfig": cos}
    )


def test_the_parameters_hold_no_secret_and_the_seal_gives_them_back() -> None:
    key = SecretStr(new_service_key())
    request = _request()
    sealed = seal_secrets(request, key)
    parameters = public_parameters(request)
    text = json.dumps(parameters) + sealed
    assert USER_SIG not in text and SECRET_KEY not in text
    assert parameters["UserSig"] == "**********"
    # What a worker gets: the public request, validated again, plus the seal.
    opened = unseal_secrets(parse_request(parameters), sealed, key)
    assert opened == request
    assert opened.UserSig.get_secret_value() == USER_SIG
    assert (
        opened.CosConfig.SecretKey is not None and opened.CosConfig.SecretKey.get_secret_value() == SECRET_KEY
    )


def test_a_request_without_cos_keys_stays_without() -> None:
    key = SecretStr(new_service_key())
    request = _request(with_cos_keys=False)
    opened = unseal_secrets(parse_request(public_parameters(request)), seal_secrets(request, key), key)
    assert opened.CosConfig.SecretKey is None and opened.UserSig.get_secret_value() == USER_SIG


def test_every_seal_is_different() -> None:
    key = SecretStr(new_service_key())
    assert seal_secrets(_request(), key) != seal_secrets(_request(), key)


def test_another_key_a_damaged_seal_or_no_key_is_a_clear_error() -> None:
    request = _request()
    sealed = seal_secrets(request, SecretStr(new_service_key()))
    with pytest.raises(SealError, match="do not open with this RECORDER_SERVICE_KEY"):
        unseal_secrets(request, sealed, SecretStr(new_service_key()))
    with pytest.raises(SealError, match="do not open"):
        unseal_secrets(request, sealed[:-4] + "AAAA", SecretStr(new_service_key()))
    with pytest.raises(SealError, match="RECORDER_SERVICE_KEY is not set"):
        seal_secrets(request, None)
    with pytest.raises(SealError, match="is not a service key") as caught:
        seal_secrets(request, SecretStr("too-short"))
    assert "too-short" not in str(caught.value)
