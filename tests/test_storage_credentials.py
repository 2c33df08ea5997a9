"""Which COS keys a run uses: the request's, else the environment's, else a clear error."""

from __future__ import annotations

import pytest

from recorder.request import CosLocation
from recorder.storage.base import StorageError
from recorder.storage.credentials import resolve_credentials

SECRET = "env-secret-NEVER-SHOW-51c2"
TOKEN = "env-token-NEVER-SHOW-77ad"


def _location(**keys: str) -> CosLocation:
    return CosLocation.model_validate({"Region": "ap-guangzhou", "Bucket": "rec-1250000000", **keys})


def test_the_request_keys_win_over_the_environment() -> None:
    env = {"TENCENTCLOUD_SECRETID": "AKIDenv", "TENCENTCLOUD_SECRETKEY": SECRET}
    found = resolve_credentials(_location(SecretId="AKIDreq", SecretKey="req-key"), env)
    assert (found.secret_id, found.secret_key.get_secret_value(), found.source) == (
        "AKIDreq",
        "req-key",
        "request",
    )
    assert found.token is None


def test_the_environment_with_a_session_token() -> None:
    env = {
        "TENCENTCLOUD_SECRETID": "AKIDtmp",
        "TENCENTCLOUD_SECRETKEY": SECRET,
        "TENCENTCLOUD_SESSIONTOKEN": TOKEN,
    }
    found = resolve_credentials(_location(), env)
    assert found.source == "environment" and found.secret_id == "AKIDtmp"
    assert found.secret_key.get_secret_value() == SECRET
    assert found.token is not None and found.token.get_secret_value() == TOKEN
    # Neither secret shows when the credentials are printed or logged.
    assert SECRET not in repr(found) and TOKEN not in repr(found) and SECRET not in str(found)


def test_an_empty_session_token_means_permanent_keys() -> None:
    env = {"TENCENTCLOUD_SECRETID": "AKID", "TENCENTCLOUD_SECRETKEY": SECRET, "TENCENTCLOUD_SESSIONTOKEN": ""}
    assert resolve_credentials(_location(), env).token is None


def test_no_credentials_anywhere_is_a_clear_permanent_error() -> None:
    with pytest.raises(StorageError) as caught:
        resolve_credentials(_location(), {})
    message = str(caught.value)
    assert "CosConfig.SecretId" in message and "TENCENTCLOUD_SECRETID" in message
    assert caught.value.permanent


def test_half_a_key_pair_in_the_environment_names_the_missing_half() -> None:
    with pytest.raises(StorageError, match="TENCENTCLOUD_SECRETKEY is not set"):
        resolve_credentials(_location(), {"TENCENTCLOUD_SECRETID": "AKID"})
    with pytest.raises(StorageError, match="TENCENTCLOUD_SECRETID is not set") as caught:
        resolve_credentials(_location(), {"TENCENTCLOUD_SECRETKEY": SECRET})
    assert SECRET not in str(caught.value)
