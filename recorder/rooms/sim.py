"""The `sim` room: simulated anchors served as live HTTP-FLV on loopback.

It stands in for a TRTC room plus its relay: each anchor's stream is served at
`/live/{stream}.flv` while the anchor publishes; removing the recorder or dismissing the
room ends every stream, as the end of a TRTC relay does. The first pull of an anchor's
appearance gets its media from its first frame (a relay started as the anchor joined); a
later pull, after a drop, gets live media from that moment on. An anchor who leaves and
comes back is a new appearance, with a new stream.

The same server answers JSON about the room, so a recorder in another process (a Prefect
worker) can watch it (`recorder.rooms.sim_remote.RemoteSimRoom`); the room id is
percent-encoded in the path:

- `GET /rooms/{sdk_app_id}/{room}`: `{"sdk_app_id", "room", "streams": {anchor: url}}`; it
  does not start the script's clock (finding a room is not looking at it, as in-process).
- `GET /rooms/{sdk_app_id}/{room}/state`: `{"publishers": [...], "ended", "recorder_removed",
  "streams"}`; the recorder's look at the room, so the first one starts the clock (`begin`).

Any other room or path gets a 404 with a JSON `error`.
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import quote, unquote

from recorder.rooms.base import RoomNotFoundError
from recorder.rooms.flv_publisher import publish_flv
from recorder.rooms.sim_script import SimAnchor, SimScript

LOOPBACK = "127.0.0.1"


class _ChunkedWriter:
    """HTTP/1.1 chunked transfer: the reader sees a clean end of stream, not a reset."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._wfile = handler.wfile
        self.gone = False

    def write(self, data: bytes) -> int:
        # Once the recorder has hung up, the muxer's last writes (closing the file as the
        # error unwinds) go nowhere quietly: the first error alone ends the stream.
        if data and not self.gone:
            try:
                self._wfile.write(b"%x\r\n%b\r\n" % (len(data), bytes(data)))
            except (BrokenPipeError, ConnectionResetError):
                self.gone = True
                raise
        return len(data)

    def finish(self) -> None:
        self._wfile.write(b"0\r\n\r\n")


class SimRoom:
    """A scripted room. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, sdk_app_id: int, room: str, script: SimScript, port: int = 0) -> None:
        self.sdk_app_id = sdk_app_id
        self.room = room
        self.script = script
        self._started_at: float | None = None
        self._pulled: set[SimAnchor] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Port 0: any free port; a fixed one lets another process be configured in advance.
        self._server = ThreadingHTTPServer((LOOPBACK, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SimRoom:
        self._thread.start()
        register(self)
        return self

    def stop(self) -> None:
        unregister(self)
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SimRoom:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def control_url(self) -> str:
        """Where another process reaches this room (`RECORDER_SIM_ROOM_URL`)."""
        return f"http://{LOOPBACK}:{self._server.server_port}"

    # -- the Room interface ------------------------------------------------------------

    def begin(self) -> float:
        """Start the script's clock (idempotent); return its start on the monotonic clock.

        The recorder's first look at the room starts it, so a script reads as "seconds
        after the recorder joined" however long the recorder took to get there."""
        with self._lock:
            if self._started_at is None:
                self._started_at = time.monotonic()
            return self._started_at

    def elapsed(self) -> float:
        start = self.begin()  # first: on the very first call it is "now"
        return time.monotonic() - start

    def _on_now(self) -> list[SimAnchor]:
        """The scripted appearances publishing now; none once the relay is over."""
        if self._relay_over():
            return []
        now = self.elapsed()
        return [a for a in self.script.anchors if a.join <= now < a.leave]

    def publishers(self) -> set[str]:
        return {a.user_id for a in self._on_now()}

    def _publishing(self, user_id: str) -> SimAnchor | None:
        """The appearance of `user_id` that is on now, if any."""
        return next((a for a in self._on_now() if a.user_id == user_id), None)

    def stream_url(self, anchor: str) -> str:
        if all(a.user_id != anchor for a in self.script.anchors):
            raise RoomNotFoundError(f"anchor {anchor!r} is not in simulated room {self.room!r}")
        return f"http://{LOOPBACK}:{self._server.server_port}/live/{quote(anchor, safe='')}.flv"

    def ended(self) -> bool:
        at = self.script.dismiss_at
        return self._stopping.is_set() or (at is not None and self.elapsed() >= at)

    def recorder_removed(self) -> bool:
        at = self.script.remove_recorder_at
        return at is not None and self.elapsed() >= at

    # -- serving -----------------------------------------------------------------------

    def _relay_over(self) -> bool:
        return self.ended() or self.recorder_removed()

    def _streams(self) -> dict[str, str]:
        anchors = sorted({a.user_id for a in self.script.anchors})
        return {user_id: self.stream_url(user_id) for user_id in anchors}

    def _state(self) -> dict[str, object]:
        self.begin()  # the recorder's look at the room, as publishers() and the rest are in-process
        return {
            "publishers": sorted(self.publishers()),
            "ended": self.ended(),
            "recorder_removed": self.recorder_removed(),
            "streams": self._streams(),
        }

    def _serve_control(self, handler: BaseHTTPRequestHandler) -> None:
        # Split before decoding: a percent-encoded room id may hold any character.
        parts = handler.path.partition("?")[0].split("/")[2:]  # after "", "rooms"
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "state"):
            _send_json(handler, HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {handler.path}"})
            return
        sdk_app_id, room = unquote(parts[0]), unquote(parts[1])
        if (sdk_app_id, room) != (str(self.sdk_app_id), self.room):
            error = (
                f"no simulated room {room!r} for SdkAppId {sdk_app_id} here: "
                f"this server runs room {self.room!r} for SdkAppId {self.sdk_app_id}"
            )
            _send_json(handler, HTTPStatus.NOT_FOUND, {"error": error})
            return
        if len(parts) == 3:
            _send_json(handler, HTTPStatus.OK, self._state())
        else:
            _send_json(
                handler,
                HTTPStatus.OK,
                {"sdk_app_id": self.sdk_app_id, "room": self.room, "streams": self._streams()},
            )

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/rooms/"):
            self._serve_control(handler)
            return
        name = unquote(handler.path.removeprefix("/live/").removesuffix(".flv"))
        anchor = self._publishing(name)
        if anchor is None:
            handler.send_error(HTTPStatus.NOT_FOUND, "no such stream")
            return
        with self._lock:
            first_pull = anchor not in self._pulled
            self._pulled.add(anchor)
        wall_start = self.begin() + anchor.join
        media_from = 0.0 if first_pull else max(0.0, time.monotonic() - wall_start)
        handler.send_response(HTTPStatus.OK)
        handler.send_header("Content-Type", "video/x-flv")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        writer = _ChunkedWriter(handler)
        try:
            publish_flv(anchor, writer, wall_start, media_from, self._relay_over)
            writer.finish()
        except Exception:
            # The recorder hung up: nothing to send any more. PyAV raises that as the write's
            # own error, or, as the muxer closes, as its "error in PyAV callback".
            if not writer.gone:
                raise

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        room = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                room._serve(self)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the recorder logs what matters; the room stays quiet

        return Handler


def _send_json(handler: BaseHTTPRequestHandler, status: HTTPStatus, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    # One answer per connection: a watcher polls with objects nobody closes, and a kept-alive
    # connection would hold a handler thread here for as long as that process lives.
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)


# Running simulated rooms of this process, found by (SdkAppId, room) like TRTC rooms are.
_ROOMS: dict[tuple[int, str], SimRoom] = {}
_ROOMS_LOCK = threading.Lock()


def register(room: SimRoom) -> None:
    with _ROOMS_LOCK:
        _ROOMS[(room.sdk_app_id, room.room)] = room


def unregister(room: SimRoom) -> None:
    with _ROOMS_LOCK:
        if _ROOMS.get((room.sdk_app_id, room.room)) is room:
            del _ROOMS[(room.sdk_app_id, room.room)]


def find_sim_room(sdk_app_id: int, room: str) -> SimRoom:
    with _ROOMS_LOCK:
        found = _ROOMS.get((sdk_app_id, room))
    if found is None:
        raise RoomNotFoundError(
            f"no simulated room {room!r} for SdkAppId {sdk_app_id} is running in this process"
        )
    return found


__all__ = ["SimAnchor", "SimRoom", "SimScript", "find_sim_room"]
