"""A simulated room run by another process (`recorder sim-room`), watched over loopback HTTP.

A flow run started by a Prefect worker lives in the worker's process, where the sim room's
in-process registry is empty; `RemoteSimRoom` asks the room's own server instead (see
`recorder.rooms.sim` for the endpoints). Every question is one GET, answered as it would be
in-process, so the recorder's stop rules see the same room either way.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from recorder.rooms.base import RoomNotFoundError

# The room is on loopback: an answer that takes longer than this is not coming.
TIMEOUT_SECONDS = 5.0

M = TypeVar("M", bound=BaseModel)


class _RoomInfo(BaseModel):
    streams: dict[str, str]


class _RoomState(_RoomInfo):
    publishers: list[str]
    ended: bool
    recorder_removed: bool


class RemoteSimRoom:
    """The `Room` served at `control_url` (http://127.0.0.1:PORT) for (`sdk_app_id`, `room`).

    Any failure to get an answer (refused connection, timeout, 404, a reply that is not the
    room's state) raises `RoomNotFoundError` naming the URL and the room: during the watch a
    lost room must stop the run loudly, never read as "nobody is publishing"."""

    def __init__(
        self, control_url: str, sdk_app_id: int, room: str, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.control_url = control_url.rstrip("/")
        self.sdk_app_id = sdk_app_id
        self.room = room
        self._room_url = f"{self.control_url}/rooms/{sdk_app_id}/{quote(room, safe='')}"
        # trust_env=False: the room is on loopback; a proxy from the environment would only
        # stand in the way (or answer for a room it cannot see).
        self._client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False)
        # Anchors' stream URLs never change for a room, so any answer's list serves later asks.
        self._streams: dict[str, str] = {}

    def close(self) -> None:
        self._client.close()

    def check(self) -> RemoteSimRoom:
        """Make sure the room is there, without starting its script's clock."""
        self._streams = self._get(self._room_url, _RoomInfo).streams
        return self

    # -- the Room interface ------------------------------------------------------------

    def publishers(self) -> set[str]:
        return set(self._state().publishers)

    def stream_url(self, anchor: str) -> str:
        if anchor not in self._streams:
            self.check()
        try:
            return self._streams[anchor]
        except KeyError:
            raise RoomNotFoundError(
                f"anchor {anchor!r} is not in simulated room {self.room!r} at {self.control_url}"
            ) from None

    def ended(self) -> bool:
        return self._state().ended

    def recorder_removed(self) -> bool:
        return self._state().recorder_removed

    # -- HTTP ----------------------------------------------------------------------------

    def _state(self) -> _RoomState:
        state = self._get(f"{self._room_url}/state", _RoomState)
        self._streams = state.streams
        return state

    def _get(self, url: str, model: type[M]) -> M:
        where = f"simulated room {self.room!r} of SdkAppId {self.sdk_app_id} at {url}"
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            raise RoomNotFoundError(
                f"cannot reach {where}: {type(exc).__name__}: {exc or 'no detail'} "
                "(is `recorder sim-room` running there?)"
            ) from exc
        if response.status_code != httpx.codes.OK:
            reason = _error_of(response)
            raise RoomNotFoundError(f"{where} is not there: HTTP {response.status_code}: {reason}")
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise RoomNotFoundError(f"{where} answered something that is not a room: {exc}") from exc


def _error_of(response: httpx.Response) -> str:
    """The server's own reason, if it gave one in JSON; else the start of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return response.text[:200]


__all__ = ["RemoteSimRoom"]
