"""Room backends behind one interface (`Room`): `sim` now; `rtmp` and `trtc` to come."""

from __future__ import annotations

from recorder.rooms.base import Room, RoomNotFoundError


def open_room(backend: str, sdk_app_id: int, room: str, sim_room_url: str | None = None) -> Room:
    """The live room the request names, through the configured backend.

    `sim`: a simulated room of this process first (the CLI, the tests); else, with
    `sim_room_url`, the one a `recorder sim-room` process serves there (a worker's runs)."""
    if backend == "sim":
        from recorder.rooms.sim import find_sim_room

        try:
            return find_sim_room(sdk_app_id, room)
        except RoomNotFoundError as exc:
            if sim_room_url is None:
                raise
            from recorder.rooms.sim_remote import RemoteSimRoom

            try:
                return RemoteSimRoom(sim_room_url, sdk_app_id, room).check()
            except RoomNotFoundError as remote_exc:
                # Both places were looked in: say so, not just the last one.
                raise RoomNotFoundError(f"{exc}; {remote_exc}") from remote_exc
    raise RoomNotFoundError(f"room backend {backend!r} is not available (known: sim)")


__all__ = ["Room", "RoomNotFoundError", "open_room"]
