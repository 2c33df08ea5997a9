"""Room backends behind one interface (`Room`): `sim` now; `rtmp` and `trtc` to come."""

from __future__ import annotations

from recorder.rooms.base import Room, RoomNotFoundError


def open_room(backend: str, sdk_app_id: int, room: str) -> Room:
    """The live room the request names, through the configured backend."""
    if backend == "sim":
        from recorder.rooms.sim import find_sim_room

        return find_sim_room(sdk_app_id, room)
    raise RoomNotFoundError(f"room backend {backend!r} is not available (known: sim)")


__all__ = ["Room", "RoomNotFoundError", "open_room"]
