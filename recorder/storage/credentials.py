"""Which COS keys a run uses: the request's, else the worker's environment, else a clear error."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from recorder.request import CosLocation
from recorder.storage.base import StorageError

# The names Tencent Cloud's SDKs, serverless functions and CVM roles use.
ENV_SECRET_ID = "TENCENTCLOUD_SECRETID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRETKEY"
ENV_SESSION_TOKEN = "TENCENTCLOUD_SESSIONTOKEN"


class CosCredentials(BaseModel):
    """Secret parts are SecretStr: a repr, log line or error never shows them."""

    model_config = ConfigDict(frozen=True)

    secret_id: str
    secret_key: SecretStr
    # Temporary (role) credentials come with a session token.
    token: SecretStr | None = None
    source: Literal["request", "environment"]


def resolve_credentials(location: CosLocation, environ: Mapping[str, str] | None = None) -> CosCredentials:
    """The request's SecretId/SecretKey win; then the environment; else StorageError."""
    if location.SecretId is not None and location.SecretKey is not None:
        return CosCredentials(secret_id=location.SecretId, secret_key=location.SecretKey, source="request")
    env = os.environ if environ is None else environ
    secret_id, secret_key = env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, "")
    if secret_id and secret_key:
        token = env.get(ENV_SESSION_TOKEN) or None
        return CosCredentials(
            secret_id=secret_id,
            secret_key=SecretStr(secret_key),
            token=SecretStr(token) if token else None,
            source="environment",
        )
    if secret_id or secret_key:
        missing = ENV_SECRET_KEY if secret_id else ENV_SECRET_ID
        raise StorageError(f"no COS credentials: {missing} is not set beside the other one", permanent=True)
    raise StorageError(
        "no COS credentials: give CosConfig.SecretId and CosConfig.SecretKey in the request, or set "
        f"{ENV_SECRET_ID} and {ENV_SECRET_KEY} (and {ENV_SESSION_TOKEN} for temporary keys) "
        "where the recorder runs",
        permanent=True,
    )
