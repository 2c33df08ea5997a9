"""Room backends behind one interface (`Room`): `sim`, `rtmp` and `trtc`."""

from __future__ import annotations

from pathlib import Path

from recorder.request import RecordingRequest
from recorder.rooms.base import Room, RoomNotFoundError
from recorder.settings import RecorderSettings


def open_room(
    settings: RecorderSettings,
    sdk_app_id: int,
    room: str,
    *,
    request: RecordingRequest | None = None,
    relay_journal: Path | None = None,
) -> Room:
    """The live room the request names, through the backend `settings.room_backend`.

    `sim`: a simulated room of this process first (the CLI, the tests); else, with
    `settings.sim_room_url`, the one a `recorder sim-room` process serves there (a worker's
    runs). `rtmp`: the anchors' streams on the RTMP server at `settings.rtmp_url`, once its
    statistics page (`settings.rtmp_stat_url`) answers. `trtc`: relays of the `request`'s
    anchors to that RTMP server, started as the room is watched and listed in
    `relay_journal` (without one, the room can be checked but not relayed)."""
    backend = settings.room_backend
    if backend == "sim":
        from recorder.rooms.sim import find_sim_room

        try:
            return find_sim_room(sdk_app_id, room)
        except RoomNotFoundError as exc:
            if settings.sim_room_url is None:
                raise
            from recorder.rooms.sim_remote import RemoteSimRoom

            try:
                return RemoteSimRoom(settings.sim_room_url, sdk_app_id, room).check()
            except RoomNotFoundError as remote_exc:
                # Both places were looked in: say so, not just the last one.
                raise RoomNotFoundError(f"{exc}; {remote_exc}") from remote_exc
    if backend == "rtmp":
        from recorder.rooms.rtmp import RtmpRoom

        return RtmpRoom(sdk_app_id, room, settings).check()
    if backend == "trtc":
        from recorder.rooms.trtc import TrtcRoom

        if request is None:
            raise ValueError("the trtc room backend needs the request (its robot UserId and UserSig)")
        return TrtcRoom(request, settings, relay_journal).check()
    raise RoomNotFoundError(f"room backend {backend!r} is not available (known: sim, rtmp, trtc)")


__all__ = ["Room", "RoomNotFoundError", "open_room"]
