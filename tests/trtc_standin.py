"""A TRTC server API stand-in on loopback for tests: API 3.0 as tencentcloud-sdk-python speaks it.

Point the real SDK here through its HTTP profile only (nothing is patched):

    with TrtcStandIn(secret_id="AKID...", secret_key="...") as trtc:
        trtc.add_room("1234", SimScript(anchors=[SimAnchor(user_id="teacher", leave=30)]))
        profile = ClientProfile(httpProfile=HttpProfile(endpoint=trtc.endpoint, protocol="http"))
        client = TrtcClient(Credential(secret_id, secret_key), "ap-guangzhou", profile)
        client.StartPublishCdnStream(...)            # answers a TaskId; a relay pushes to the RTMP URL
        trtc.fail_next("StopPublishCdnStream", "InternalError", "try again")

Every request's TC3-HMAC-SHA256 signature is checked as the API gateway documents it
(https://cloud.tencent.com/document/api/213/30654), so a call that passes here was signed
correctly. Errors are answered the API 3.0 way: HTTP 200 with `Response.Error.{Code,Message}`.

The rooms are scripted (recorder/rooms/sim_script.py): each anchor is in the room from its
`join` to its `leave` (seconds after `add_room`), publishing the test pattern and tone that
recorder/rooms/flv_publisher.py encodes. A relay (StartPublishCdnStream, single stream,
WithTranscoding=0) pushes its anchor's media to the PublishCdnUrl: publish_flv writes FLV into
an ffmpeg process that copies the video, encodes the audio per AudioParams (TRTC always
transcodes relayed audio) and publishes over RTMP. As TRTC documents for AgentParams.MaxIdleTime,
a relay whose anchor is away stops pushing and waits for them; after MaxIdleTime it ends (its
agent leaves). A room with nobody left in it (no anchor, no relay agent) is dismissed, as TRTC
destroys empty rooms; so an anchor-less room is dismissed MaxIdleTime after its last anchor left.

A dismissed room stays dismissed (the rest of its script is not played), unlike TRTC where
someone entering would create it again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import IO, Any, cast
from urllib.parse import urlsplit

from recorder.rooms.flv_publisher import publish_flv
from recorder.rooms.sim_script import SimAnchor, SimScript
from recorder.usersig import UserSigError, verify_usersig
from tests.loopback_server import LoopbackHTTPServer

log = logging.getLogger(__name__)

API_VERSION = "2019-07-22"
SERVICE = "trtc"
ACTIONS = (
    "StartPublishCdnStream",
    "StopPublishCdnStream",
    "RemoveUser",
    "RemoveUserByStrRoomId",
    "DismissRoom",
    "DismissRoomByStrRoomId",
)
MAX_CLOCK_SKEW = 300.0  # seconds between X-TC-Timestamp and the server's clock (AuthFailure.SignatureExpire)
DEFAULT_MAX_IDLE = 30  # AgentParams.MaxIdleTime when not given, and its documented bounds
MIN_MAX_IDLE, MAX_MAX_IDLE = 5, 86400
MAX_CDN_URLS = 10  # PublishCdnParams: "一个任务最多支持10个推流URL"
AUDIO_SAMPLE_RATES = (48000, 44100, 32000, 24000, 16000, 8000)
CALLBACK_TIMEOUT = 3.0  # TRTC gives the receiver 5 s; tests should not wait that long
ROLE_ANCHOR, ROLE_AUDIENCE = 20, 21
EXIT_NORMAL, EXIT_REMOVED = 1, 3

_TICK = 0.05  # how often the script is played forward
_PUSH_RETRY = 1.0  # seconds between attempts when the RTMP side refuses a relay
_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/\s]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/\s]+)"
    r"/tc3_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass
class Call:
    """One API request the stand-in received (for assertions); error_code None means it succeeded."""

    action: str
    params: dict[str, Any]
    error_code: str | None


@dataclass
class Relay:
    """One StartPublishCdnStream task. `stopped` once it is over for good (see `stop_reason`)."""

    room: str
    anchor: str
    url: str
    stopped: bool = False
    task_id: str = ""
    agent: str = ""  # AgentParams.UserId: the robot that joined the room for this relay
    max_idle: float = DEFAULT_MAX_IDLE
    video: bool = True  # VideoParams given: "不填表示纯音频转推" (none means an audio-only relay)
    stop_reason: str | None = None
    pushes: int = 0  # RTMP publishing sessions started (one per appearance of the anchor, plus retries)
    push_failures: int = 0


class TrtcError(Exception):
    """An API error answer: `code` as TRTC documents them (e.g. InvalidParameter.UserId)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class _Room:
    name: str
    str_room: bool
    script: SimScript
    started: float  # monotonic clock at add_room: the script's time 0
    started_wall: float  # the same instant on the wall clock, for callback timestamps
    created: bool = False
    ended: bool = False
    present: set[SimAnchor] = field(default_factory=set)  # appearances in the room at the last look
    cut: set[SimAnchor] = field(default_factory=set)  # appearances ended early by RemoveUser
    agents: set[str] = field(default_factory=set)  # relay agents in the room (each with a live relay)
    script_removal_done: bool = False

    def room_id_json(self) -> int | str:
        # The callback document: RoomId has the type of the client's room id (a number for integer rooms).
        return self.name if self.str_room else int(self.name)

    def kind(self) -> str:
        return "string" if self.str_room else "integer"


@dataclass
class _Task:
    relay: Relay
    room: _Room
    audio: tuple[int, int, int]  # AudioEncode: sample rate, channels, kbps
    done: threading.Event = field(default_factory=threading.Event)
    idle_since: float | None = None
    thread: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None


class TrtcStandIn:
    """Serves TRTC's server API on 127.0.0.1 for one SdkAppId and one API key pair.

    `secret_id`/`secret_key` may be reassigned at any time (key rotation). `clock_offset` (seconds)
    is added to this server's clock when checking X-TC-Timestamp, to simulate clock skew.
    `usersig_key`, when given, is the application's SDK secret key: AgentParams.UserSig is then
    verified (InvalidParameter.UserSig otherwise). `strict_presence` (default, as the tests of
    this project want it) refuses a relay for an anchor not in the room right now with
    InvalidParameter.UserId; False behaves as TRTC documents ("you can create a relay task before
    the anchor enters the room"): the relay waits up to MaxIdleTime for them.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        sdk_app_id: int = 1400000000,
        callback_url: str | None = None,
        callback_key: str | None = None,
        port: int = 0,
        usersig_key: str | None = None,
        strict_presence: bool = True,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.sdk_app_id = sdk_app_id
        self.callback_url = callback_url
        self.callback_key = callback_key
        self.usersig_key = usersig_key
        self.strict_presence = strict_presence
        self.clock_offset = 0.0
        self.port = port or _free_port(self.host)
        self.calls: list[Call] = []
        self.relays: dict[str, Relay] = {}
        self.removed: set[tuple[str, str]] = set()
        self.dismissed: set[str] = set()
        self._lock = threading.RLock()
        self._rooms: dict[str, _Room] = {}
        self._tasks: dict[str, _Task] = {}
        self._faults: dict[str, list[TrtcError]] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._drain_until = 0.0

    @property
    def endpoint(self) -> str:
        """HttpProfile(endpoint=...): host and port, no scheme (the SDK adds http:// for protocol="http")."""
        return f"{self.host}:{self.port}"

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> TrtcStandIn:
        if self._server is not None:
            return self
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("relays publish through ffmpeg: apt-get install ffmpeg")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler, self)
        self._server = server
        self._threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="trtc-api", daemon=True
            ),
            threading.Thread(target=self._play, name="trtc-rooms", daemon=True),
            threading.Thread(target=self._post_callbacks, name="trtc-callbacks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        server = self._server
        self._server = None
        if server is None:
            return
        self._drain_until = time.monotonic() + 2  # events queued before stop() still go out
        with self._lock:  # from here on no relay starts (a request in flight gets InternalError)
            self._stopping.set()
            tasks = list(self._tasks.values())
            for task in tasks:
                if not task.relay.stopped:
                    task.relay.stopped = True
                    task.relay.stop_reason = "the stand-in stopped"
                task.done.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        self._outbox.put(None)
        deadline = time.monotonic() + 10
        for task in tasks:
            if task.thread is not None:
                task.thread.join(timeout=max(0.1, deadline - time.monotonic()))
            process = task.process
            if process is not None and process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=2)
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._threads = []

    def __enter__(self) -> TrtcStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- set-up and faults ---------------------------------------------------------------

    def add_room(self, room: str, script: SimScript, *, str_room: bool = False) -> None:
        """A room of this SdkAppId, played from `script`; its clock starts now."""
        if not str_room and not (room.isdigit() and 1 <= int(room) <= 4294967294):
            raise ValueError(f"integer room ids are 1..4294967294, not {room!r} (str_room=True for others)")
        with self._lock:
            if room in self._rooms:
                raise ValueError(f"room {room!r} was added already")
            self._rooms[room] = _Room(room, str_room, script, time.monotonic(), time.time())

    def fail_next(self, action: str, code: str, message: str) -> None:
        """The next authenticated call of `action` answers with this error (and has no effect).
        Several calls queue up, oldest first."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        with self._lock:
            self._faults.setdefault(action, []).append(TrtcError(code, message))

    # --- the API -------------------------------------------------------------------------

    def _authenticate(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        """TC3-HMAC-SHA256 as documented: canonical request, string to sign, derived key."""
        match = _AUTH.match(headers.get("authorization", "").strip())
        if match is None:
            raise TrtcError(
                "AuthFailure.InvalidAuthorization",
                "The Authorization header is not a TC3-HMAC-SHA256 authorization.",
            )
        try:
            timestamp = int(headers.get("x-tc-timestamp", ""))
        except ValueError:
            raise TrtcError("MissingParameter", "The request is missing X-TC-Timestamp.") from None
        if abs(time.time() + self.clock_offset - timestamp) > MAX_CLOCK_SKEW:
            raise TrtcError(
                "AuthFailure.SignatureExpire",
                "Signature expired. Timestamp and server time cannot differ by more than five minutes.",
            )
        if not hmac.compare_digest(match["id"].encode(), self.secret_id.encode()):
            raise TrtcError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        date = match["date"]
        signed = match["signed"]
        names = signed.split(";")
        failure = TrtcError(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        )
        if match["service"] != SERVICE or date != _utc_date(timestamp):
            raise failure
        if not {"content-type", "host"} <= set(names) or any(name not in headers for name in names):
            raise failure
        canonical_headers = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in names)
        if headers.get("x-tc-content-sha256") == "UNSIGNED-PAYLOAD":
            body = b"UNSIGNED-PAYLOAD"
        canonical_request = "\n".join(
            [method, path, query, canonical_headers, signed, hashlib.sha256(body).hexdigest()]
        )
        string_to_sign = "\n".join(
            [
                "TC3-HMAC-SHA256",
                str(timestamp),
                f"{date}/{SERVICE}/tc3_request",
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = _hmac(_hmac(_hmac(("TC3" + self.secret_key).encode(), date), SERVICE), "tc3_request")
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match["signature"]):
            raise failure
        if "x-tc-token" in headers:
            raise TrtcError("AuthFailure.TokenFailure", "This endpoint knows a permanent key pair only.")

    def _serve(self, action: str, headers: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
        version = headers.get("x-tc-version", "")
        if version != API_VERSION:
            raise TrtcError("NoSuchVersion", f"The API version {version!r} does not exist.")
        if action not in ACTIONS:
            raise TrtcError("InvalidAction", f"The action {action!r} is not served by this stand-in.")
        with self._lock:
            faults = self._faults.get(action)
            fault = faults.pop(0) if faults else None
        if fault is not None:
            raise fault
        self._check_app(params)
        if action == "StartPublishCdnStream":
            return self._start_relay(params)
        if action == "StopPublishCdnStream":
            return self._stop_relay(params)
        if action in ("RemoveUser", "RemoveUserByStrRoomId"):
            return self._remove_users(params, str_room=action == "RemoveUserByStrRoomId")
        return self._dismiss_room(params, str_room=action == "DismissRoomByStrRoomId")

    def _check_app(self, params: dict[str, Any]) -> None:
        app = _required(params, "SdkAppId", int, "SdkAppId")
        if app != self.sdk_app_id:
            raise TrtcError("UnauthorizedOperation.SdkAppId", f"No permission to operate SdkAppId {app}.")

    def _start_relay(self, params: dict[str, Any]) -> dict[str, Any]:
        room_id = _required(params, "RoomId", str, "RoomId")
        room_type = _required(params, "RoomIdType", int, "RoomId")
        if room_type not in (0, 1):
            raise TrtcError("InvalidParameter.RoomId", "RoomIdType is 0 (integer room) or 1 (string room).")
        if room_type == 0 and not room_id.isdigit():
            raise TrtcError(
                "InvalidParameter.RoomId", f"RoomIdType 0 needs an integer RoomId, not {room_id!r}."
            )
        if _required(params, "WithTranscoding", int, "") != 0:
            raise TrtcError(
                "InvalidParameter",
                "This stand-in relays single streams only: WithTranscoding must be 0.",
            )
        for unsupported in ("FeedBackRoomParams", "RecordParams", "SeiParams"):
            if params.get(unsupported) is not None:
                raise TrtcError("UnsupportedOperation", f"{unsupported} is not simulated by this stand-in.")
        agent = _required(params, "AgentParams", dict, "")
        agent_id = _required(agent, "UserId", str, "UserId")
        user_sig = _required(agent, "UserSig", str, "UserSig")
        max_idle = agent.get("MaxIdleTime", DEFAULT_MAX_IDLE)
        if not _is_int(max_idle) or not MIN_MAX_IDLE <= max_idle <= MAX_MAX_IDLE:
            raise TrtcError(
                "InvalidParameter.OutOfRange",
                f"AgentParams.MaxIdleTime must be {MIN_MAX_IDLE}..{MAX_MAX_IDLE} seconds.",
            )
        if not agent_id or not user_sig:
            raise TrtcError("InvalidParameter.UserId", "AgentParams.UserId and UserSig must not be empty.")
        if self.usersig_key is not None:
            self._check_usersig(agent_id, user_sig)
        audio = _audio_encode(params)
        video = params.get("VideoParams") is not None
        media = _required(_required(params, "SingleSubscribeParams", dict, ""), "UserMediaStream", dict, "")
        user_info = _required(media, "UserInfo", dict, "UserId")
        anchor_id = _required(user_info, "UserId", str, "UserId")
        if media.get("StreamType") not in (None, 0):
            raise TrtcError("InvalidParameter", "The simulated anchors publish their camera stream (0) only.")
        elsewhere = user_info.get("RoomId") not in (None, room_id)
        if elsewhere or user_info.get("RoomIdType") not in (None, room_type):
            raise TrtcError("InvalidParameter.RoomId", "UserInfo.RoomId/RoomIdType must be the main room's.")
        url = _cdn_url(params)

        with self._lock:
            if self._stopping.is_set():
                raise TrtcError("InternalError", "The stand-in is stopping.")
            now = time.monotonic()
            room = self._room(room_id, str_room=room_type == 1)
            self._advance(room, now)
            if room.ended:
                raise TrtcError("FailedOperation.RoomNotExist", f"Room {room_id} was dismissed.")
            scripted = {a.user_id for a in room.script.anchors}
            if agent_id in scripted:
                raise TrtcError(
                    "InvalidParameter.UserId",
                    f"AgentParams.UserId {agent_id!r} is a user of the room; the relay robot needs its own.",
                )
            if anchor_id not in scripted or (
                self.strict_presence and _appearance(room, anchor_id, now - room.started) is None
            ):
                raise TrtcError("InvalidParameter.UserId", f"User {anchor_id!r} is not in room {room_id}.")
            if any(not t.relay.stopped and t.relay.url == url for t in self._tasks.values()):
                raise TrtcError("FailedOperation.TaskExist", f"A relay to {url} is running already.")
            task_id = _task_id()
            relay = Relay(room.name, anchor_id, url, task_id=task_id, agent=agent_id, max_idle=max_idle)
            relay.video = video
            task = _Task(relay, room, audio)
            if _appearance(room, anchor_id, now - room.started) is None:
                task.idle_since = now
            self._tasks[task_id] = task
            self.relays[task_id] = relay
            if agent_id not in room.agents:
                room.agents.add(agent_id)
                if not room.created:
                    room.created = True
                    self._event(room, 101, time.time(), user=agent_id)
                self._event(room, 103, time.time(), user=agent_id, role=ROLE_AUDIENCE, reason=1)
            task.thread = threading.Thread(target=self._relay, args=(task,), name=f"trtc-relay-{anchor_id}")
            task.thread.start()
        return {"TaskId": task_id}

    def _check_usersig(self, agent_id: str, user_sig: str) -> None:
        assert self.usersig_key is not None
        try:
            ticket = verify_usersig(user_sig, self.usersig_key)
        except UserSigError as exc:
            raise TrtcError("InvalidParameter.UserSig", f"UserSig expired or wrong: {exc}.") from None
        if ticket.user_id != agent_id or ticket.sdk_app_id != self.sdk_app_id:
            raise TrtcError("InvalidParameter.UserSig", "The UserSig was issued for another user or app.")

    def _stop_relay(self, params: dict[str, Any]) -> dict[str, Any]:
        task_id = _required(params, "TaskId", str, "TaskId")
        if not task_id:
            raise TrtcError("InvalidParameter.TaskId", "TaskId must not be empty.")
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.relay.stopped:
                # "FailedOperation.TaskNotExist: 任务不存在或已结束" covers both unknown and finished tasks.
                raise TrtcError("FailedOperation.TaskNotExist", "The task does not exist or has ended.")
            self._end_relay(task, "stopped by StopPublishCdnStream", EXIT_NORMAL)
            self._advance(task.room, time.monotonic())
        return {"TaskId": task_id}

    def _remove_users(self, params: dict[str, Any], *, str_room: bool) -> dict[str, Any]:
        room_id = _room_param(params, str_room)
        users = params.get("UserIds")
        if users is None or users == []:
            raise TrtcError("MissingParameter.UserIds", "The request is missing UserIds.")
        if not isinstance(users, list) or len(users) > 10 or not all(isinstance(u, str) and u for u in users):
            raise TrtcError("InvalidParameter.UserIds", "UserIds is a list of 1 to 10 user ids.")
        with self._lock:
            now = time.monotonic()
            room = self._live_room(room_id, str_room, now)
            wall = time.time()
            for user in users:
                if user in room.agents:
                    self.removed.add((room.name, user))
                    for task in self._live_tasks(room, agent=user):
                        self._end_relay(task, "the relay's agent was removed by RemoveUser", EXIT_REMOVED)
                appearance = _appearance(room, user, now - room.started)
                if appearance is not None:
                    self.removed.add((room.name, user))
                    room.cut.add(appearance)
                    room.present.discard(appearance)
                    self._event(room, 104, wall, user=user, role=ROLE_ANCHOR, reason=EXIT_REMOVED)
                    for task in self._live_tasks(room, anchor=user):
                        self._end_relay(task, "the anchor was removed by RemoveUser", EXIT_NORMAL)
            self._advance(room, now)
        return {}

    def _dismiss_room(self, params: dict[str, Any], *, str_room: bool) -> dict[str, Any]:
        room_id = _room_param(params, str_room)
        with self._lock:
            now = time.monotonic()
            room = self._live_room(room_id, str_room, now)
            self._dismiss(room, "the room was dismissed by DismissRoom", kick=True)
        return {}

    # --- rooms ---------------------------------------------------------------------------

    def _room(self, room_id: str, *, str_room: bool) -> _Room:
        room = self._rooms.get(room_id)
        if room is None or room.str_room != str_room:
            hint = f" (room {room_id} here is a {room.kind()} room)" if room is not None else ""
            kind = "string" if str_room else "integer"
            raise TrtcError("FailedOperation.RoomNotExist", f"There is no {kind} room {room_id}{hint}.")
        return room

    def _live_room(self, room_id: str, str_room: bool, now: float) -> _Room:
        room = self._room(room_id, str_room=str_room)
        self._advance(room, now)
        if room.ended or not room.created:
            raise TrtcError("FailedOperation.RoomNotExist", f"Room {room_id} does not exist now.")
        return room

    def _live_tasks(self, room: _Room, *, agent: str | None = None, anchor: str | None = None) -> list[_Task]:
        return [
            t
            for t in self._tasks.values()
            if t.room is room
            and not t.relay.stopped
            and (agent is None or t.relay.agent == agent)
            and (anchor is None or t.relay.anchor == anchor)
        ]

    def _play(self) -> None:
        """Plays every room's script forward, so joins, leaves and timeouts happen on time."""
        while not self._stopping.wait(_TICK):
            with self._lock:
                now = time.monotonic()
                for room in self._rooms.values():
                    self._advance(room, now)

    def _advance(self, room: _Room, now: float) -> None:
        """Brings `room` up to `now` (the lock is held): joins and leaves, the script's removal of
        the recorder and dismissal, relays that waited MaxIdleTime, an emptied room."""
        if room.ended:
            return
        script = room.script
        t = now - room.started
        dismiss_at = script.dismiss_at
        seen_at = t if dismiss_at is None else min(t, dismiss_at)
        present = {a for a in script.anchors if a.join <= seen_at < a.leave and a not in room.cut}
        order = {anchor: index for index, anchor in enumerate(script.anchors)}  # events in a stable order
        for gone in sorted(room.present - present, key=lambda a: (a.leave, order[a])):
            self._event(
                room, 104, room.started_wall + gone.leave, user=gone.user_id, role=ROLE_ANCHOR, reason=1
            )
        for came in sorted(present - room.present, key=lambda a: (a.join, order[a])):
            at = room.started_wall + came.join
            if not room.created:
                room.created = True
                self._event(room, 101, at, user=came.user_id)
            self._event(room, 103, at, user=came.user_id, role=ROLE_ANCHOR, reason=1)
            if came.video:
                self._event(room, 201, at, user=came.user_id)
            if came.audio:
                self._event(room, 203, at, user=came.user_id)
        room.present = present
        remove_at = script.remove_recorder_at
        if remove_at is not None and t >= remove_at and not room.script_removal_done:
            room.script_removal_done = True
            for task in self._live_tasks(room):
                self._end_relay(task, "the recorder was removed from the room (script)", EXIT_REMOVED)
        publishing = {a.user_id for a in present}
        for task in self._live_tasks(room):
            if task.relay.anchor in publishing:
                task.idle_since = None
            elif task.idle_since is None:
                task.idle_since = now
            elif now - task.idle_since >= task.relay.max_idle:
                self._end_relay(task, f"no anchor for MaxIdleTime ({task.relay.max_idle:g} s)", EXIT_NORMAL)
        if dismiss_at is not None and t >= dismiss_at:
            self._dismiss(room, "the room was dismissed (script)", kick=True)
        elif room.created and not present and not room.agents:
            self._dismiss(room, "the room was empty", kick=False)

    def _dismiss(self, room: _Room, reason: str, *, kick: bool) -> None:
        wall = time.time()
        if kick:  # DismissRoom: "把房间所有用户从房间移出"
            for anchor in [a for a in room.script.anchors if a in room.present]:
                self._event(room, 104, wall, user=anchor.user_id, role=ROLE_ANCHOR, reason=EXIT_REMOVED)
        room.present = set()
        for task in self._live_tasks(room):
            self._end_relay(task, reason, EXIT_REMOVED)
        room.ended = True
        self.dismissed.add(room.name)
        self._event(room, 102, wall)

    def _end_relay(self, task: _Task, reason: str, exit_reason: int) -> None:
        """The task is over (the lock is held); its agent leaves once it has no other relay here."""
        relay = task.relay
        relay.stopped = True
        relay.stop_reason = reason
        task.done.set()
        room = task.room
        if relay.agent in room.agents and not self._live_tasks(room, agent=relay.agent):
            room.agents.discard(relay.agent)
            self._event(room, 104, time.time(), user=relay.agent, role=ROLE_AUDIENCE, reason=exit_reason)

    # --- relays --------------------------------------------------------------------------

    def _relay(self, task: _Task) -> None:
        """Pushes each appearance of the anchor while the task lives (one RTMP session each)."""
        finished: set[SimAnchor] = set()
        while not task.done.is_set():
            with self._lock:
                room = task.room
                appearance = _appearance(room, task.relay.anchor, time.monotonic() - room.started)
            if appearance is None or appearance in finished:
                task.done.wait(_TICK)
                continue
            try:
                if self._push(task, appearance):
                    finished.add(appearance)
                    continue
            except Exception:  # the relay must never take the stand-in down; say why it failed
                log.exception("relay %s of %s failed", task.relay.task_id, task.relay.anchor)
            with self._lock:
                task.relay.push_failures += 1
            task.done.wait(_PUSH_RETRY)

    def _push(self, task: _Task, appearance: SimAnchor) -> bool:
        """One RTMP session for one appearance; True when it ran to its end (or the relay's)."""
        relay, room = task.relay, task.room
        carried = appearance.model_copy(update={"video": appearance.video and relay.video})
        if not (carried.video or carried.audio):
            log.info(
                "relay %s: %s publishes nothing this audio-only relay carries", relay.task_id, relay.anchor
            )
            return True
        wall_start = room.started + appearance.join
        media_from = max(0.0, time.monotonic() - wall_start)
        sample_rate, channels, kbps = task.audio
        # FLV announces its streams only as packets come: half a second is enough to see both.
        probe = ["-analyzeduration", "500000", "-probesize", "65536"]
        audio = ["-c:a", "aac", "-ar", str(sample_rate), "-ac", str(channels), "-b:a", f"{kbps}k"]
        command = [
            *["ffmpeg", "-hide_banner", "-loglevel", "error", *probe, "-f", "flv", "-i", "pipe:0"],
            *["-map", "0", "-c:v", "copy", *audio],
            *["-f", "flv", "-flvflags", "no_duration_filesize", relay.url],
        ]

        def should_stop() -> bool:
            return task.done.is_set() or appearance in room.cut

        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, bufsize=0
            )
            with self._lock:
                task.process = process
                relay.pushes += 1
            raised: BaseException | None = None
            try:
                publish_flv(
                    carried, _PipeSink(cast(IO[bytes], process.stdin)), wall_start, media_from, should_stop
                )
            except Exception as exc:  # the RTMP side went away: ffmpeg exited, our writes fail
                raised = exc
            finally:
                with contextlib.suppress(OSError):
                    cast(IO[bytes], process.stdin).close()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
                with self._lock:
                    task.process = None
            if raised is None and process.returncode == 0:
                return True
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace").strip()
        if not task.done.is_set():
            log.warning(
                "relay %s of %s to %s failed (ffmpeg exit %s, %s): %s",
                relay.task_id,
                relay.anchor,
                relay.url,
                process.returncode,
                raised,
                tail,
            )
        return task.done.is_set()

    # --- callbacks -----------------------------------------------------------------------

    def _event(
        self,
        room: _Room,
        event_type: int,
        at: float,
        *,
        user: str | None = None,
        role: int | None = None,
        reason: int | None = None,
    ) -> None:
        """Queues a room (1xx) or media (2xx) event; the poster thread sends them in order."""
        if self.callback_url is None:
            return
        info: dict[str, Any] = {
            "RoomId": room.room_id_json(),
            "EventTs": int(at),
            "EventMsTs": int(at * 1000),
        }
        if user is not None:
            info["UserId"] = user
        if role is not None:
            info["Role"] = role
        if event_type == 103:
            info["TerminalType"] = 4 if role == ROLE_AUDIENCE else 100  # 4 Linux (the robot), 100 other
            info["UserType"] = 3  # Native SDK
        if reason is not None:
            info["Reason"] = reason
        self._outbox.put(
            {"EventGroupId": 1 if event_type < 200 else 2, "EventType": event_type, "EventInfo": info}
        )

    def _post_callbacks(self) -> None:
        while True:
            event = self._outbox.get()
            if event is None:
                return
            if self._stopping.is_set() and time.monotonic() > self._drain_until:
                continue  # stopped a while ago: drop the backlog rather than hold stop() up
            url, key = self.callback_url, self.callback_key
            if url is None:
                continue
            body, headers = callback_request(self.sdk_app_id, event, key)
            for attempt in (1, 2):  # TRTC retries at once after a first failure
                try:
                    _post(url, body, headers)
                    break
                except (OSError, http.client.HTTPException) as exc:
                    if attempt == 2 or self._stopping.is_set():
                        log.warning("room callback %s to %s failed: %s", event["EventType"], url, exc)
                        break


def callback_request(sdk_app_id: int, event: dict[str, Any], key: str | None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one room/media callback, as TRTC sends them.

    Format: "房间与媒体回调" (https://cloud.tencent.com/document/product/647/51586): a JSON POST
    with headers Content-Type application/json, Sign and SdkAppId; body {EventGroupId (1 room, 2
    media), EventType (101 created, 102 dismissed, 103 entered, 104 left, 201 video on, 203 audio
    on), CallbackTs (ms), EventInfo {RoomId (a number for integer rooms), EventTs (s), EventMsTs
    (ms), UserId, Role (20 anchor, 21 audience), TerminalType, UserType, Reason (enter: 1 normal;
    exit: 1 normal, 2 timeout, 3 removed from the room)}}. Sign = base64(hmacsha256(key, body))
    over the raw body; TRTC's bodies are cJSON-printed (tabs and newlines, as the document's
    sample), so a receiver that re-serialises before checking fails here as it would there.
    Without a key no Sign header is sent.
    """
    payload = {**event, "CallbackTs": int(time.time() * 1000)}
    ordered = {k: payload[k] for k in ("EventGroupId", "EventType", "CallbackTs", "EventInfo")}
    body = json.dumps(ordered, indent="\t", separators=(",", ":\t"), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "SdkAppId": str(sdk_app_id)}
    if key is not None:
        headers["Sign"] = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
    return body, headers


# --- HTTP plumbing -------------------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    """One POST with the header names spelt as given (urllib would send "Sdkappid")."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.netloc, timeout=CALLBACK_TIMEOUT)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", target, body, headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise http.client.HTTPException(f"answered HTTP {answer.status}")
    finally:
        connection.close()


class _Server(LoopbackHTTPServer):
    def __init__(self, address: tuple[str, int], handler: type[_Handler], standin: TrtcStandIn) -> None:
        self.standin = standin
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        standin = cast(_Server, self.server).standin
        headers = {name.lower(): value for name, value in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        action = headers.get("x-tc-action", "")
        params: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            decoded = json.loads(body) if body else {}
            params = decoded if isinstance(decoded, dict) else {}
        request_id = str(uuid.uuid4())
        try:
            if self.command != "POST" or not headers.get("content-type", "").startswith("application/json"):
                raise TrtcError("UnsupportedOperation", "This stand-in serves POST with a JSON body only.")
            standin._authenticate(self.command, path, query, headers, body)
            if body and not params:
                raise TrtcError("InvalidParameter", "The request body is not a JSON object.")
            answer = standin._serve(action, headers, params)
            code = None
        except TrtcError as error:
            answer = {"Error": {"Code": error.code, "Message": error.message}}
            code = error.code
        with standin._lock:  # before answering, so a test sees it as soon as its call returns
            standin.calls.append(Call(action, params, code))
        data = json.dumps({"Response": {**answer, "RequestId": request_id}}).encode()
        self.send_response(200)
        # Exactly this: the SDK checks for errors only when Content-Type is "application/json".
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _PipeSink:
    """publish_flv's sink: FLV bytes into ffmpeg's stdin (unbuffered, so the relay stays live)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe

    def write(self, data: bytes) -> int:
        view = memoryview(bytes(data))
        while view:
            written = self._pipe.write(view)
            view = view[written or 0 :]
        return len(data)


# --- helpers -------------------------------------------------------------------------------


def _appearance(room: _Room, user: str, t: float) -> SimAnchor | None:
    """The appearance of `user` in the room at script time `t`, if they are in it."""
    if room.ended or (room.script.dismiss_at is not None and t >= room.script.dismiss_at):
        return None
    for anchor in room.script.anchors:
        if anchor.user_id == user and anchor.join <= t < anchor.leave and anchor not in room.cut:
            return anchor
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _required(params: dict[str, Any], name: str, kind: type, suffix: str) -> Any:
    """params[name] of JSON type `kind`: MissingParameter[.suffix] if absent, InvalidParameter if wrong."""
    value = params.get(name)
    if value is None:
        raise TrtcError(
            f"MissingParameter.{suffix}" if suffix else "MissingParameter", f"{name} is required."
        )
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        code = f"InvalidParameter.{suffix}" if suffix else "InvalidParameter"
        raise TrtcError(code, f"{name} must be of type {kind.__name__}.")
    return value


def _room_param(params: dict[str, Any], str_room: bool) -> str:
    """RoomId of RemoveUser/DismissRoom (an integer) or their ByStrRoomId forms (a string)."""
    room = params.get("RoomId")
    if room is None:
        raise TrtcError("MissingParameter.RoomId", "RoomId is required.")
    if str_room and isinstance(room, str) and room:
        return room
    if not str_room and _is_int(room) and room > 0:
        return str(room)
    kind = "a non-empty string" if str_room else "a positive integer"
    raise TrtcError("InvalidParameter.RoomId", f"RoomId must be {kind} for this action.")


def _audio_encode(params: dict[str, Any]) -> tuple[int, int, int]:
    """AudioParams.AudioEncode, required: the SDK's documentation says audio is always transcoded,
    so the audio parameters must be given when the task starts."""
    audio = params.get("AudioParams")
    encode = audio.get("AudioEncode") if isinstance(audio, dict) else None
    if not isinstance(encode, dict):
        raise TrtcError("MissingParameter.AudioEncodeParams", "AudioParams.AudioEncode is required.")
    rate, channels, kbps = encode.get("SampleRate"), encode.get("Channel"), encode.get("BitRate")
    codec = encode.get("Codec", 0)
    if (
        rate not in AUDIO_SAMPLE_RATES
        or channels not in (1, 2)
        or not isinstance(kbps, int)
        or isinstance(kbps, bool)
        or not 8 <= kbps <= 500
        or codec not in (0, 1, 2)
        or (codec == 2 and channels != 2)
        or (codec in (1, 2) and rate == 8000)
    ):
        raise TrtcError(
            "InvalidParameter.AudioEncodeParams",
            "AudioEncode: SampleRate one of 48000/44100/32000/24000/16000/8000, Channel 1 or 2, "
            "BitRate 8..500 kbps, Codec 0 (LC-AAC), 1 (HE-AAC) or 2 (HE-AACv2, stereo only).",
        )
    return int(cast(int, rate)), int(cast(int, channels)), int(kbps)


def _cdn_url(params: dict[str, Any]) -> str:
    targets = params.get("PublishCdnParams")
    if not targets:
        raise TrtcError("MissingParameter.PublishCdnParams", "PublishCdnParams is required.")
    if not isinstance(targets, list) or len(targets) > MAX_CDN_URLS:
        raise TrtcError(
            "InvalidParameter.PublishCdnUrls", f"PublishCdnParams holds 1..{MAX_CDN_URLS} targets."
        )
    if len(targets) > 1:
        raise TrtcError(
            "InvalidParameter.PublishCdnUrls", "This stand-in relays to one PublishCdnUrl per task."
        )
    target = targets[0]
    url = target.get("PublishCdnUrl") if isinstance(target, dict) else None
    if not url:
        raise TrtcError("MissingParameter.PublishCdnUrls", "PublishCdnParams[0].PublishCdnUrl is required.")
    if not isinstance(url, str) or not url.startswith("rtmp://") or len(url) <= len("rtmp://"):
        raise TrtcError("InvalidParameter.PublishCdnUrls", "PublishCdnUrl must be an rtmp:// URL.")
    if target.get("IsTencentCdn") not in (None, 0, 1):
        raise TrtcError("InvalidParameter", "IsTencentCdn is 0 or 1.")
    return url


def _task_id() -> str:
    # Shaped like TRTC's: "-m97l2ZU7kOlV5cTRMoU6yoGp2nDYkzbJ13EC4K-4pycoZXVv+XVrNoUXQ8++8Z2PwUlAQ.."
    return "-" + base64.b64encode(os.urandom(50), altchars=b"+-").decode().replace("=", ".")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _utc_date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
