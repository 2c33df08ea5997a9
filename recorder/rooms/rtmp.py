"""The `rtmp` room: anchors' streams on an RTMP server the user runs (nginx-rtmp).

TRTC relays push each anchor's stream to `{rtmp_url}/{stream name}` (names from
`recorder.rooms.rtmp_names`); the recorder pulls the same URL. Who is publishing comes from
nginx-rtmp's statistics page (`rtmp_stat all`, see deployments/nginx-rtmp.conf): a stream of
the application with a `<publishing/>` element has a publisher connected right now.

An RTMP server knows streams, not rooms: it cannot tell that the room was dismissed or the
recorder removed, so those answers are always "no" here. The relay's end ends the stream,
which ends that anchor's recording, and MaxIdleTime ends the run; TRTC's room callbacks are
what will tell those events at once.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import httpx

from recorder.rooms.base import RoomNotFoundError
from recorder.rooms.rtmp_names import anchor_of, stream_name
from recorder.settings import RecorderSettings

# The statistics page is on loopback next to the server: an answer slower than this is
# not coming, and the watch loop asks twice a second.
TIMEOUT_SECONDS = 3.0


def application_of(rtmp_url: str) -> str:
    """The nginx-rtmp application of `rtmp://host:port/app`: the URL's last path segment."""
    application = urlsplit(rtmp_url).path.rstrip("/").rpartition("/")[2]
    if not application:
        raise ValueError(f"RECORDER_RTMP_URL names no application: {rtmp_url!r} (e.g. rtmp://host:1935/live)")
    return application


def publishing_streams(stat_xml: bytes, application: str) -> set[str]:
    """Names of the streams of `application` that have a publisher, from nginx-rtmp's stat XML.

    Raises ValueError when the document is not nginx-rtmp's statistics."""
    try:
        root = ET.fromstring(stat_xml)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    if root.tag != "rtmp":
        raise ValueError(f"not nginx-rtmp statistics (the root element is <{root.tag}>)")
    names: set[str] = set()
    # Every server block may have an application of that name (one per listen port).
    for app in root.iterfind("server/application"):
        if app.findtext("name") != application:
            continue
        for stream in app.iterfind("live/stream"):
            name = stream.findtext("name")
            # A stream without <publishing/> has only players waiting: nobody is on air.
            if name and stream.find("publishing") is not None:
                names.add(name)
    return names


class RtmpRoom:
    """The `Room` (`sdk_app_id`, `room`) as seen on the RTMP server of `settings`."""

    def __init__(self, sdk_app_id: int, room: str, settings: RecorderSettings) -> None:
        self.sdk_app_id = sdk_app_id
        self.room = room
        self.rtmp_url = settings.rtmp_url.rstrip("/")
        self.stat_url = settings.rtmp_stat_url
        self.application = application_of(self.rtmp_url)
        self._secret = settings.rtmp_stream_secret
        # trust_env=False: the page is on loopback; a proxy from the environment would only
        # stand in the way (or answer for a server it cannot see).
        self._client = httpx.Client(timeout=TIMEOUT_SECONDS, trust_env=False, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def check(self) -> RtmpRoom:
        """Make sure the statistics page answers: a run must not start on a server it cannot see."""
        self._streams()
        return self

    # -- the Room interface ------------------------------------------------------------

    def publishers(self) -> set[str]:
        anchors = (anchor_of(name, self.sdk_app_id, self.room, self._secret) for name in self._streams())
        return {anchor for anchor in anchors if anchor is not None}

    def stream_url(self, anchor: str) -> str:
        return f"{self.rtmp_url}/{stream_name(self.sdk_app_id, self.room, anchor, self._secret)}"

    def ended(self) -> bool:
        return False  # an RTMP server cannot know (see the module's description)

    def recorder_removed(self) -> bool:
        return False

    # -- the statistics page -------------------------------------------------------------

    def _streams(self) -> set[str]:
        where = f"the RTMP statistics page {self.stat_url}"
        try:
            response = self._client.get(self.stat_url)
        except httpx.HTTPError as exc:
            # A lost page must stop the run loudly, never read as "nobody is publishing".
            raise RoomNotFoundError(
                f"cannot read {where} (room {self.room!r} of SdkAppId {self.sdk_app_id}): "
                f"{type(exc).__name__}: {exc or 'no detail'} (is nginx-rtmp running, with `rtmp_stat all`?)"
            ) from exc
        if response.status_code != httpx.codes.OK:
            # nginx's error pages are HTML around the reason: the status line says it all.
            status = f"HTTP {response.status_code} {response.reason_phrase}"
            raise RoomNotFoundError(f"cannot read {where}: {status} (is `rtmp_stat all` served there?)")
        try:
            return publishing_streams(response.content, self.application)
        except ValueError as exc:
            raise RoomNotFoundError(f"{where} is not nginx-rtmp's statistics: {exc}") from exc


__all__ = ["RtmpRoom", "application_of", "publishing_streams"]
