"""UserSig: the ticket a TRTC user enters a room with (TLS signature version 2).

The documented algorithm: HMAC-SHA256, keyed with the application's SDK secret key, over
"TLS.identifier:{userid}\\nTLS.sdkappid:{sdkappid}\\nTLS.time:{now}\\nTLS.expire:{expire}\\n";
that signature goes, base64, into a JSON object with the same fields, which is compressed
with zlib and written in a URL-safe base64 ('+' -> '*', '/' -> '-', '=' -> '_').
Generate UserSigs on a server only: the key signs for every user of the application.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import zlib
from dataclasses import dataclass

DEFAULT_EXPIRE_SECONDS = 180 * 86400  # as Tencent's own libraries
_TO_URL = str.maketrans("+/=", "*-_")
_FROM_URL = str.maketrans("*-_", "+/=")


def _signature(key: str, user_id: str, sdk_app_id: int, issued: int, expire: int) -> str:
    content = f"TLS.identifier:{user_id}\nTLS.sdkappid:{sdk_app_id}\nTLS.time:{issued}\nTLS.expire:{expire}\n"
    digest = hmac.new(key.encode(), content.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def generate_usersig(
    sdk_app_id: int, key: str, user_id: str, expire: int = DEFAULT_EXPIRE_SECONDS, now: int | None = None
) -> str:
    issued = int(time.time()) if now is None else now
    ticket = {
        "TLS.ver": "2.0",
        "TLS.identifier": user_id,
        "TLS.sdkappid": sdk_app_id,
        "TLS.expire": expire,
        "TLS.time": issued,
        "TLS.sig": _signature(key, user_id, sdk_app_id, issued, expire),
    }
    return base64.b64encode(zlib.compress(json.dumps(ticket).encode())).decode().translate(_TO_URL)


@dataclass(frozen=True)
class UserSigTicket:
    user_id: str
    sdk_app_id: int
    issued: int
    expire: int

    @property
    def expires_at(self) -> int:
        return self.issued + self.expire


class UserSigError(ValueError):
    """Not a UserSig, or not one this key signed."""


def verify_usersig(usersig: str, key: str, now: int | None = None) -> UserSigTicket:
    """What the UserSig says, once its signature checks out and it has not expired."""
    try:
        ticket = json.loads(zlib.decompress(base64.b64decode(usersig.translate(_FROM_URL))))
        found = UserSigTicket(
            str(ticket["TLS.identifier"]),
            int(ticket["TLS.sdkappid"]),
            int(ticket["TLS.time"]),
            int(ticket["TLS.expire"]),
        )
        signature = str(ticket["TLS.sig"])
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise UserSigError(f"not a UserSig: {exc}") from None
    expected = _signature(key, found.user_id, found.sdk_app_id, found.issued, found.expire)
    if not hmac.compare_digest(signature, expected):
        raise UserSigError("the UserSig was not signed with this key")
    if (int(time.time()) if now is None else now) > found.expires_at:
        raise UserSigError("the UserSig has expired")
    return found
