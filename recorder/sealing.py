"""A request's secrets sealed with the service key, so the flow run's parameters hold
only ciphertext.

A run started through the gateway is stored by Prefect with its parameters: in the
database, in the UI, in the worker's logs. UserSig and CosConfig.SecretKey must not be
among them in the clear. The gateway seals them (Fernet: AES-128-CBC + HMAC-SHA256) with
the service key that it shares with the workers, and the run unseals them when it starts.
Prefect never holds the key, so its database alone reveals nothing.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from recorder.request import RecordingRequest


class SealError(ValueError):
    """The sealed secrets cannot be opened: no key, a different key, or damaged."""


def new_service_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(service_key: SecretStr | None) -> Fernet:
    if service_key is None:
        raise SealError("RECORDER_SERVICE_KEY is not set: the request's secrets cannot be sealed or opened")
    try:
        return Fernet(service_key.get_secret_value().encode())
    except ValueError:
        raise SealError(
            "RECORDER_SERVICE_KEY is not a service key (make one with `recorder service-key`)"
        ) from None


def seal_secrets(request: RecordingRequest, service_key: SecretStr | None) -> str:
    secret_key = request.CosConfig.SecretKey
    payload = {
        "UserSig": request.UserSig.get_secret_value(),
        "SecretKey": secret_key.get_secret_value() if secret_key is not None else None,
    }
    return _fernet(service_key).encrypt(json.dumps(payload).encode()).decode()


def public_parameters(request: RecordingRequest) -> dict[str, object]:
    """The request as a flow run parameter: everything but the secrets, which read
    "**********" (the request model still validates; `unseal_secrets` puts them back)."""
    return request.model_dump(mode="json")


def unseal_secrets(request: RecordingRequest, sealed: str, service_key: SecretStr | None) -> RecordingRequest:
    try:
        payload = json.loads(_fernet(service_key).decrypt(sealed.encode()))
    except InvalidToken:
        raise SealError("the request's sealed secrets do not open with this RECORDER_SERVICE_KEY") from None
    cos = request.CosConfig
    if payload["SecretKey"] is not None:
        cos = cos.model_copy(update={"SecretKey": SecretStr(payload["SecretKey"])})
    return request.model_copy(update={"UserSig": SecretStr(payload["UserSig"]), "CosConfig": cos})
