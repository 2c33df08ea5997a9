"""What a COS failure means for the recording: a short reason, and whether to try again."""

from __future__ import annotations

from qcloud_cos.cos_exception import CosClientError, CosException, CosServiceError  # type: ignore[import-untyped]

from recorder.storage.base import StorageError

# 403s that mean the keys themselves were refused (not merely lacking a permission).
REFUSED_CREDENTIALS = {
    "SignatureDoesNotMatch": "the SecretKey does not match the SecretId",
    "InvalidAccessKeyId": "the SecretId is not known",
    "InvalidToken": "the session token is not valid",
    "ExpiredToken": "the session token has expired",
    "TokenExpired": "the session token has expired",
    "RequestTimeTooSkewed": "this machine's clock is too far from COS's",
}
# 4xx answers that a second try can cure.
TRANSIENT_CLIENT_STATUSES = {408, 409, 429}


def explain(exc: CosException, *, bucket: str, region: str, credentials_from: str) -> StorageError:
    """Never includes the request's headers: they carry the signature and the session token."""
    if isinstance(exc, CosServiceError):
        return _service_error(exc, bucket=bucket, region=region, credentials_from=credentials_from)
    if isinstance(exc, CosClientError):
        return StorageError(f"COS did not answer: {_network_reason(str(exc))}")
    return StorageError(f"COS client error: {exc}")


def _service_error(exc: CosServiceError, *, bucket: str, region: str, credentials_from: str) -> StorageError:
    status = int(exc.get_status_code())
    code = str(exc.get_error_code())
    answer = f"{status} {code}"
    request_id = exc.get_request_id()
    if request_id and request_id != "Unknown":
        answer += f", request id {request_id}"
    if status == 403 and code in REFUSED_CREDENTIALS:
        reason = REFUSED_CREDENTIALS[code]
        return StorageError(
            f"COS refused the credentials from the {credentials_from} ({answer}): {reason}", permanent=True
        )
    if status == 403:
        return StorageError(
            f"the credentials from the {credentials_from} may not write to bucket {bucket} ({answer})",
            permanent=True,
        )
    if code == "NoSuchBucket":
        return StorageError(f"bucket {bucket} does not exist in region {region} ({answer})", permanent=True)
    if status >= 500 or status in TRANSIENT_CLIENT_STATUSES:
        return StorageError(f"COS answered {answer} after retries")
    return StorageError(f"COS refused the request ({answer}): {exc.get_error_msg()}", permanent=True)


def _network_reason(text: str) -> str:
    """requests' messages are long; say which of the usual network failures it was."""
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "aborted" in lowered or "reset" in lowered or "remotedisconnected" in lowered:
        return "the connection was dropped"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "the COS host name does not resolve"
    return text[:300]
