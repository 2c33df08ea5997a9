"""The `trtc` room: TRTC relays each anchor's stream out of the room to an RTMP ingest.

For every anchor to record, `StartPublishCdnStream` (no transcoding) has a robot join the
room and push that anchor's stream to the ingest, under the anchor's stream name
(recorder.rooms.rtmp_names); the recorder pulls it there as the `rtmp` room does. Who is
on air comes from the ingest's statistics page (your own ingest) or, for Tencent CDN, from
the room callbacks.

Which anchors: the request's `Anchors`, else those TRTC's room callbacks name (103 as an
anchor, 201, 203), which reach the run as a `RoomRoster`. The callbacks also tell at once
that the room was dismissed (102) or the recorder's robot removed (104 with Reason 3).

Robots: TRTC lets one robot UserId run one relay. The first anchor's relay uses the
request's UserId and UserSig, so RemoveUser on that UserId ends the recording as in the
original. Every further anchor needs a robot of its own, `{UserId}_r{n}`, whose UserSig the
recorder signs with the application's SDK secret key (RECORDER_TRTC_SDK_SECRET_KEY).

Every relay started is written to a journal (`relays.json` in the run's folder) before
anything else happens, so `stop_relays` ends them all even after a crash or a cancel.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, SecretStr

from recorder.request import RecordingRequest
from recorder.room_events import RoomRoster
from recorder.rooms.base import RoomNotFoundError
from recorder.rooms.rtmp import RtmpRoom
from recorder.rooms.rtmp_names import stream_name
from recorder.settings import RecorderSettings
from recorder.trtc_api import RelaySpec, TrtcApiError, TrtcConfigError, TrtcRelayApi, api_credential
from recorder.usersig import generate_usersig

log = logging.getLogger(__name__)

RELAYS_FILE = "relays.json"
START_ATTEMPTS = 4  # per anchor, for transient API errors (1 s, 2 s, 4 s apart)
# A robot waits MaxIdleTime for its absent anchor, then leaves and its relay ends. The
# recorder counts a relay as gone a little later than that, then starts a new one if the
# anchor is still wanted.
RELAY_GONE_GRACE_SECONDS = 5.0
ROBOT_SUFFIX = "_r"
USER_ID_MAX = 32


class RelayRecord(BaseModel):
    """One relay in the journal."""

    task_id: str
    anchor: str
    agent: str
    stopped: bool = False


class RelayJournal:
    """relays.json: every relay this run started, and whether it was stopped."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: list[RelayRecord] = []  # without a path (a room checked or tried out here)

    def read(self) -> list[RelayRecord]:
        if self.path is None:
            return list(self._memory)
        if not self.path.exists():
            return []
        return [RelayRecord.model_validate(item) for item in json.loads(self.path.read_text())]

    def write(self, records: list[RelayRecord]) -> None:
        if self.path is None:
            self._memory = list(records)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".part")
        with open(partial, "w") as file:
            json.dump([r.model_dump() for r in records], file)
            file.flush()
            os.fsync(file.fileno())  # a relay nobody stops costs money: the record must last
        os.replace(partial, self.path)

    def add(self, record: RelayRecord) -> None:
        self.write([*self.read(), record])

    def mark_stopped(self, task_id: str) -> None:
        self.write(
            [r.model_copy(update={"stopped": True}) if r.task_id == task_id else r for r in self.read()]
        )


def stop_relays(settings: RecorderSettings, sdk_app_id: int, journal: RelayJournal | Path) -> list[str]:
    """StopPublishCdnStream for every relay the journal lists as running; the problems.

    Safe to call again: a relay that ended by itself answers TaskNotExist, which counts as stopped."""
    if isinstance(journal, Path):
        journal = RelayJournal(journal)
    running = [r for r in journal.read() if not r.stopped]
    if not running:
        return []
    problems: list[str] = []
    try:
        api = TrtcRelayApi(settings, sdk_app_id)
    except TrtcConfigError as exc:
        return [f"cannot stop {len(running)} relay(s): {exc}"]
    for record in running:
        try:
            api.stop(record.task_id)
        except TrtcApiError as exc:
            problems.append(f"relay of {record.anchor}: {exc}")
            continue
        journal.mark_stopped(record.task_id)
    return problems


@dataclass
class _Relay:
    task_id: str
    agent: str
    last_on_air: float


class TrtcRoom:
    """The request's room, reached through TRTC relays (see the module's description)."""

    def __init__(
        self,
        request: RecordingRequest,
        settings: RecorderSettings,
        journal: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sdk_app_id = request.SdkAppId
        self.room = request.room
        self._str_room = request.RoomId is None
        self._request = request
        self._settings = settings
        self._clock = clock
        self._journal = RelayJournal(journal)
        self._ingest = RtmpRoom(request.SdkAppId, request.room, settings)
        self._secret = settings.rtmp_stream_secret
        self._tencent_cdn = settings.trtc_is_tencent_cdn == 1
        self._publish_template = settings.trtc_publish_url or f"{settings.rtmp_url.rstrip('/')}/{{stream}}"
        self._play_template = settings.trtc_play_url
        self._max_idle = request.MaxIdleTime
        self._video = request.Mode != "00"  # MP3 needs the audio only
        self._api: TrtcRelayApi | None = None
        self._relays: dict[str, _Relay] = {}  # anchor -> its live relay
        self._agents: dict[str, str] = {}  # anchor -> robot UserId, kept across relays
        self._failures: dict[str, str] = {}  # anchor -> why they cannot be recorded
        self._done: set[str] = set()  # anchors whose robot was removed: not relayed again
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._roster = RoomRoster()
        self._baseline: RoomRoster | None = None

    def check(self) -> TrtcRoom:
        """Fail in seconds, not after an hour: the API keys are set, the URLs make sense and
        the ingest's statistics page answers."""
        try:
            api_credential(self._settings)
        except TrtcConfigError as exc:
            raise RoomNotFoundError(str(exc)) from None
        if self._tencent_cdn:
            if not (self._settings.trtc_publish_url and self._play_template):
                raise RoomNotFoundError(
                    "RECORDER_TRTC_IS_TENCENT_CDN=1 needs RECORDER_TRTC_PUBLISH_URL and "
                    "RECORDER_TRTC_PLAY_URL"
                )
        else:
            self._ingest.check()
        for template in (self._publish_template, self._play_template):
            if template is not None and "{stream}" not in template:
                raise RoomNotFoundError(f"a relay URL template lacks {{stream}}: {template!r}")
        return self

    # -- what the room callbacks said -----------------------------------------------------

    def update_roster(self, roster: RoomRoster) -> None:
        """The room's roster as the callbacks left it. The first one is the baseline: a
        dismissal or removal it already holds happened before this run."""
        if self._baseline is None:
            self._baseline = roster
        self._roster = roster

    def _removed_since_start(self, user: str) -> bool:
        before = self._baseline.removed.get(user) if self._baseline else None
        now = self._roster.removed.get(user)
        return now is not None and (before is None or now > before)

    # -- the Room interface ---------------------------------------------------------------

    def publishers(self) -> set[str]:
        """Starts a relay for every anchor to record that has none, then answers which
        relayed anchors are on air."""
        now = self._clock()
        # Tencent CDN has no statistics page for us: the callbacks say who is on air.
        on_air = set(self._roster.anchors) if self._tencent_cdn else self._ingest.publishers()
        self._retire_relays(on_air, now)
        for anchor in sorted(self._wanted()):
            if anchor not in self._relays and anchor not in self._failures and anchor not in self._done:
                self._start_relay(anchor, now)
        return {anchor for anchor in self._relays if anchor in on_air}

    def stream_url(self, anchor: str) -> str:
        if self._tencent_cdn:
            assert self._play_template is not None  # check() insists on it
            return self._play_template.replace("{stream}", self._stream(anchor))
        return self._ingest.stream_url(anchor)

    def ended(self) -> bool:
        before = self._baseline.dismissed_at if self._baseline else None
        now = self._roster.dismissed_at
        return now is not None and (before is None or now > before)

    def recorder_removed(self) -> bool:
        return self._removed_since_start(self._request.UserId)

    def failures(self) -> dict[str, str]:
        """Anchors that cannot be recorded, and why (a Message for their Files entry)."""
        return dict(self._failures)

    def close(self) -> list[str]:
        """Stop every relay this room started; the problems."""
        self._ingest.close()
        self._relays.clear()
        return stop_relays(self._settings, self.sdk_app_id, self._journal)

    # -- relays ---------------------------------------------------------------------------

    def _wanted(self) -> set[str]:
        if self._request.Anchors is not None:
            return set(self._request.Anchors)
        robots = set(self._agents.values()) | {self._request.UserId}
        return set(self._roster.anchors) - robots

    def _stream(self, anchor: str) -> str:
        return stream_name(self.sdk_app_id, self.room, anchor, self._secret)

    def _retire_relays(self, on_air: set[str], now: float) -> None:
        """Forget relays that ended: their robot was removed, or it gave up waiting."""
        for anchor, relay in list(self._relays.items()):
            if anchor in on_air:
                relay.last_on_air = now
                continue
            if self._removed_since_start(relay.agent):
                # Someone removed this robot: they meant this anchor not to be recorded on.
                # TRTC ended the relay; cleanup's StopPublishCdnStream will say TaskNotExist.
                del self._relays[anchor]
                self._done.add(anchor)
            elif now - relay.last_on_air > self._max_idle_of_robot() + RELAY_GONE_GRACE_SECONDS:
                del self._relays[anchor]
                self._stop_quietly(relay)

    def _max_idle_of_robot(self) -> int:
        return min(max(self._max_idle, 5), 86400)

    def _start_relay(self, anchor: str, now: float) -> None:
        if now < self._retry_at.get(anchor, 0.0):
            return
        try:
            agent, sig = self._robot(anchor)
            api = self._client()
            task_id = api.start(
                RelaySpec(
                    room=self.room,
                    str_room=self._str_room,
                    anchor=anchor,
                    agent_id=agent,
                    agent_sig=sig,
                    max_idle=self._max_idle,
                    publish_url=SecretStr(self._publish_template.replace("{stream}", self._stream(anchor))),
                    video=self._video,
                )
            )
        except TrtcApiError as exc:
            attempts = self._attempts.get(anchor, 0) + 1
            self._attempts[anchor] = attempts
            if exc.transient and attempts < START_ATTEMPTS:
                self._retry_at[anchor] = now + 2.0 ** (attempts - 1)
                log.warning("relay of %s not started (%s); trying again", anchor, exc)
                return
            self._give_up(anchor, f"recording failed: {exc}")
            return
        except (TrtcConfigError, ValueError) as exc:
            self._give_up(anchor, f"recording failed: {exc}")
            return
        self._attempts.pop(anchor, None)
        self._journal.add(RelayRecord(task_id=task_id, anchor=anchor, agent=agent))
        self._relays[anchor] = _Relay(task_id, agent, now)
        log.info("relay of %s started as robot %s", anchor, agent)

    def _give_up(self, anchor: str, message: str) -> None:
        self._failures[anchor] = message
        log.error("relay of %s: %s", anchor, message)
        if anchor not in self._relays:
            # The robot goes to the next anchor: above all the request's own, so RemoveUser
            # on the recorder's UserId still ends a recording that runs.
            self._agents.pop(anchor, None)

    def _robot(self, anchor: str) -> tuple[str, SecretStr]:
        """The robot UserId and UserSig that relays `anchor`."""
        agent = self._agents.get(anchor)
        if agent is None:
            taken = set(self._agents.values())
            if self._request.UserId not in taken:
                agent = self._request.UserId
            else:
                number = len(taken) + 1
                suffix = f"{ROBOT_SUFFIX}{number}"
                agent = self._request.UserId[: USER_ID_MAX - len(suffix)] + suffix
            self._agents[anchor] = agent
        if agent == self._request.UserId:
            return agent, self._request.UserSig
        key = self._settings.trtc_sdk_secret_key
        if key is None:
            raise TrtcConfigError(
                f"TRTC lets one robot UserId relay one anchor, and {self._request.UserId} relays another "
                "anchor already; set RECORDER_TRTC_SDK_SECRET_KEY (the application's SDK secret key) so "
                "the recorder can sign a robot of its own for each further anchor"
            )
        return agent, SecretStr(generate_usersig(self.sdk_app_id, key.get_secret_value(), agent))

    def _client(self) -> TrtcRelayApi:
        if self._api is None:
            self._api = TrtcRelayApi(self._settings, self.sdk_app_id)
        return self._api

    def _stop_quietly(self, relay: _Relay) -> None:
        try:
            self._client().stop(relay.task_id)
        except TrtcApiError as exc:
            log.warning("could not stop an idle relay (%s); cleanup tries again", exc)
            return
        self._journal_stopped(relay.task_id)

    def _journal_stopped(self, task_id: str) -> None:
        self._journal.mark_stopped(task_id)


__all__ = ["RELAYS_FILE", "RelayJournal", "RelayRecord", "TrtcRoom", "stop_relays"]
