"""Object keys for recordings: `{Path}/{room}/{anchor}_{start}.{ext}`, safe whatever the ids hold."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote


def recording_key(path: str, room: str, anchor: str, started_at: datetime, extension: str) -> str:
    """`path` is the request's normalised CosConfig.Path ('/' or '/a/b').

    StrRoomId may hold characters such as '|', '?' or ' ' that are unsafe in file names and
    URLs: they are percent-encoded, so two different rooms never share a folder.
    """
    stamp = started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    parts = [p for p in path.split("/") if p]
    parts += [quote(room, safe=""), f"{quote(anchor, safe='')}_{stamp}.{extension}"]
    return "/".join(parts)
