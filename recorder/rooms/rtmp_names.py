"""RTMP stream names of anchors: `{SdkAppId}_{room}_{UserId}[_{key}]`, and back.

One RTMP application carries the streams of every room, so a name says whose stream it
is. The relay that pushes an anchor's stream is told its name (by whoever starts the
relay), and the recorder finds the anchors of its room among the names the server lists.

- The room appears as itself when it is made of letters, digits and '-' only; otherwise
  (a StrRoomId with spaces, '|', '_', …, none of which belong in a stream name) as 'x' and
  the hex of its UTF-8 bytes. A room that itself starts with 'x' is hex-encoded too, so the
  two forms never meet: room "x41" is "x783431", room "A" is "A".
- No room form contains '_', so the name splits unambiguously up to the UserId, which may
  contain '_' itself.
- With a secret, `_` and 16 hex characters of HMAC-SHA256(secret, "SdkAppId/room/UserId")
  follow: a per-anchor key nobody can guess, so only a relay told the name can publish a
  stream the recorder takes for that anchor.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from pydantic import SecretStr

# TRTC's UserId: 1 to 32 letters, digits, '_' and '-' (recorder.request checks the same).
USER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_PLAIN_ROOM = re.compile(r"[A-Za-z0-9-]+")
KEY_CHARS = 16  # hex characters of the HMAC: 64 bits


def room_token(room: str) -> str:
    """The room as it appears in stream names (see the module's description)."""
    if not room:
        raise ValueError("the room id is empty")
    if _PLAIN_ROOM.fullmatch(room) and not room.startswith("x"):
        return room
    return "x" + room.encode().hex()


def stream_key(sdk_app_id: int, room: str, anchor: str, secret: SecretStr) -> str:
    """The per-anchor key: who knows the secret can make it, nobody else can guess it."""
    message = f"{sdk_app_id}/{room}/{anchor}".encode()
    digest = hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()
    return digest[:KEY_CHARS]


def stream_name(sdk_app_id: int, room: str, anchor: str, secret: SecretStr | None) -> str:
    """The name of `anchor`'s stream in room (`sdk_app_id`, `room`) on the RTMP server."""
    if sdk_app_id < 0:
        raise ValueError(f"SdkAppId must not be negative (got {sdk_app_id})")
    if not USER_ID.fullmatch(anchor):
        # A name that `anchor_of` could not read back would be a stream nobody records.
        raise ValueError(f"UserId must be 1 to 32 letters, digits, '_' or '-' (got {anchor!r})")
    name = f"{sdk_app_id}_{room_token(room)}_{anchor}"
    if secret is not None:
        name += "_" + stream_key(sdk_app_id, room, anchor, secret)
    return name


def anchor_of(name: str, sdk_app_id: int, room: str, secret: SecretStr | None) -> str | None:
    """The anchor whose stream `name` is in this room; None when the name is another room's,
    is not a stream name at all, or lacks the right key (a stream anyone could have pushed)."""
    prefix = f"{sdk_app_id}_{room_token(room)}_"
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    if secret is None:
        anchor = rest
    else:
        # The key is the last field: a UserId may contain '_' itself, the key never does.
        anchor, _, key = rest.rpartition("_")
        if not USER_ID.fullmatch(anchor):
            return None
        # Bytes: compare_digest refuses non-ASCII text, and a name on the server can hold any.
        expected = stream_key(sdk_app_id, room, anchor, secret).encode()
        if not hmac.compare_digest(key.encode(), expected):
            return None
    return anchor if USER_ID.fullmatch(anchor) else None


__all__ = ["anchor_of", "room_token", "stream_key", "stream_name"]
