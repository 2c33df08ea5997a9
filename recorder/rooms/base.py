"""What the recorder needs from a room, whatever the room really is (sim, rtmp, trtc)."""

from __future__ import annotations

from typing import Protocol


class Room(Protocol):
    """A live room as the recorder sees it: who publishes, where, and whether it is over."""

    def publishers(self) -> set[str]:
        """UserIds of the anchors publishing right now."""
        ...

    def stream_url(self, anchor: str) -> str:
        """Where the recorder pulls this anchor's stream from (RTMP or HTTP-FLV)."""
        ...

    def ended(self) -> bool:
        """The room was dismissed."""
        ...

    def recorder_removed(self) -> bool:
        """The recorder's own user was removed from the room."""
        ...


class RoomNotFoundError(LookupError):
    """The request names a room that the configured backend cannot reach."""
