"""Each room's roster (recorder.room_events.RoomRoster) in a Prefect Variable named by
`room_key`: the gateway writes it as TRTC's callbacks arrive, a recording's flow run reads it.

A Variable rather than the gateway's memory, so that a worker on another machine sees what
the gateway heard, and a restarted gateway forgets nothing.

Known limit: updates are read, apply, write. Within one process they are serialised per
room (TRTC sends 103 and 201 of one anchor together); two gateway replicas receiving
callbacks of the same room at the same moment can still race, and one update can be lost.
Prefect Variables have no compare-and-set; run one gateway, or route a room's callbacks to
one replica, where that matters.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.exceptions import ObjectAlreadyExists
from pydantic import ValidationError

from recorder.room_events import RoomEvent, RoomRoster, room_key

log = logging.getLogger(__name__)

ROSTER_TAG = "trtc-room-roster"

# One lock per (event loop, Variable name), alive while someone holds or waits for it: an
# asyncio.Lock belongs to one loop, and a gateway hearing of thousands of rooms should not
# keep a lock for each forever.
_locks: weakref.WeakValueDictionary[tuple[asyncio.AbstractEventLoop, str], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)


def _lock_for(name: str) -> asyncio.Lock:
    key = (asyncio.get_running_loop(), name)
    lock = _locks.get(key)
    if lock is None:
        lock = asyncio.Lock()
        _locks[key] = lock
    return lock


def _roster_of(name: str, value: Any) -> RoomRoster:
    try:
        return RoomRoster.model_validate(value)
    except ValidationError:
        # Someone edited the Variable by hand: the callbacks to come rebuild it.
        log.warning("Variable %s does not hold a room roster; starting from an empty one", name)
        return RoomRoster()


async def record_room_event(client: PrefectClient, sdk_app_id: int, event: RoomEvent) -> RoomRoster:
    """Apply one callback to its room's roster in Prefect; the roster as it now is."""
    name = room_key(sdk_app_id, event.EventInfo.RoomId)
    async with _lock_for(name):
        # Twice at most: when another replica creates the Variable between our read and our
        # create, apply the event to theirs instead.
        for _ in range(2):
            found = await client.read_variable_by_name(name)
            before = _roster_of(name, found.value) if found is not None else RoomRoster()
            after = before.apply(event)
            if found is None:
                value = after.model_dump(mode="json")
                try:
                    await client.create_variable(VariableCreate(name=name, value=value, tags=[ROSTER_TAG]))
                except ObjectAlreadyExists:
                    continue
            elif after != before:
                await client.update_variable(VariableUpdate(name=name, value=after.model_dump(mode="json")))
            return after
        raise RuntimeError(f"Variable {name} appeared and vanished while the room event was recorded")


def read_roster(client: SyncPrefectClient, sdk_app_id: int, room: int | str) -> RoomRoster:
    """The roster of one room; an empty one when no callback about it has arrived."""
    name = room_key(sdk_app_id, room)
    found = client.read_variable_by_name(name)
    return _roster_of(name, found.value) if found is not None else RoomRoster()
