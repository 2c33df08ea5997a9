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
    parts += [_segment(room), f"{_segment(anchor)}_{stamp}.{extension}"]
    return "/".join(parts)


def _segment(name: str) -> str:
    """One path segment: '/' and unsafe characters encoded, and '.'/'..' (valid StrRoomIds)
    encoded too, since quote() leaves dots alone and they would climb the tree."""
    quoted = quote(name, safe="")
    return quoted.replace(".", "%2E") if quoted in {".", ".."} else quoted
