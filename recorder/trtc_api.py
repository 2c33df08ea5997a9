"""TRTC's server API, the two calls the recorder makes: start and stop a relay of one anchor.

A relay is `StartPublishCdnStream` with `WithTranscoding=0`: a robot (AgentParams) joins the
room and pushes one anchor's stream, as it is, to an RTMP URL. `StopPublishCdnStream` ends
it. Everything goes through tencentcloud-sdk-python; a private or test endpoint is set with
the SDK's own HttpProfile, never by patching it.

Errors come back as `TrtcApiError`, whose text is what a user can act on:
"TRTC refused StartPublishCdnStream: InvalidParameter.UserSig UserSig is expired".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr
from tencentcloud.common.credential import Credential  # type: ignore[import-untyped]
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException  # type: ignore[import-untyped]
from tencentcloud.common.profile.client_profile import ClientProfile  # type: ignore[import-untyped]
from tencentcloud.common.profile.http_profile import HttpProfile  # type: ignore[import-untyped]
from tencentcloud.trtc.v20190722 import models  # type: ignore[import-untyped]
from tencentcloud.trtc.v20190722.trtc_client import TrtcClient  # type: ignore[import-untyped]

from recorder.settings import RecorderSettings
from recorder.storage.credentials import ENV_SECRET_ID, ENV_SECRET_KEY, ENV_SESSION_TOKEN

# TRTC's bounds for AgentParams.MaxIdleTime (seconds); the request allows 1 s, TRTC 5 s.
MIN_MAX_IDLE, MAX_MAX_IDLE = 5, 86400
# An API answer slower than this is not coming; the watch loop tries again.
REQUEST_TIMEOUT_SECONDS = 10
# Codes worth another attempt: the request may work a moment later.
_TRANSIENT_PREFIXES = ("InternalError", "RequestLimitExceeded", "ClientNetworkError", "ServerNetworkError")
# StopPublishCdnStream on a relay that has ended already (its anchor left for good, the
# robot was removed, the room was dismissed): the relay is stopped, which is what we wanted.
TASK_GONE = "FailedOperation.TaskNotExist"


class TrtcApiError(Exception):
    """TRTC answered an API call with an error (or could not be reached)."""

    def __init__(self, action: str, code: str, message: str) -> None:
        self.action = action
        self.code = code
        self.message = message
        super().__init__(f"TRTC refused {action}: {code} {message}".rstrip())

    @property
    def transient(self) -> bool:
        return self.code.startswith(_TRANSIENT_PREFIXES)


class TrtcConfigError(ValueError):
    """The recorder is not configured to call TRTC (no API keys)."""


@dataclass(frozen=True)
class RelaySpec:
    """One relay: push `anchor`'s stream of the room to `publish_url`, as robot `agent_id`."""

    room: str
    str_room: bool  # RoomIdType 1: a string room (0, an integer room, in this API)
    anchor: str
    agent_id: str
    agent_sig: SecretStr
    max_idle: int  # seconds the robot waits for an absent anchor before it leaves
    publish_url: SecretStr  # holds the stream name, which may carry its key
    video: bool  # False relays the audio only (no VideoParams)


def api_credential(settings: RecorderSettings, environ: Mapping[str, str] | None = None) -> Credential:
    """The API keys: RECORDER_TRTC_SECRET_ID/KEY, else the Tencent Cloud environment variables."""
    if settings.trtc_secret_id and settings.trtc_secret_key is not None:
        return Credential(settings.trtc_secret_id, settings.trtc_secret_key.get_secret_value())
    env = os.environ if environ is None else environ
    secret_id, secret_key = env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, "")
    if secret_id and secret_key:
        return Credential(secret_id, secret_key, env.get(ENV_SESSION_TOKEN) or None)
    raise TrtcConfigError(
        "no TRTC API keys: set RECORDER_TRTC_SECRET_ID and RECORDER_TRTC_SECRET_KEY, or "
        f"{ENV_SECRET_ID} and {ENV_SECRET_KEY}, where the recorder runs"
    )


class TrtcRelayApi:
    """Starts and stops relays of one application (SdkAppId)."""

    def __init__(self, settings: RecorderSettings, sdk_app_id: int) -> None:
        self.sdk_app_id = sdk_app_id
        http = HttpProfile(protocol=settings.trtc_scheme, reqTimeout=REQUEST_TIMEOUT_SECONDS)
        if settings.trtc_endpoint:
            http.endpoint = settings.trtc_endpoint
        self._is_tencent_cdn = settings.trtc_is_tencent_cdn
        self._audio = models.AudioEncode()
        self._audio.SampleRate = settings.trtc_audio_sample_rate
        self._audio.Channel = settings.trtc_audio_channels
        self._audio.BitRate = settings.trtc_audio_kbps
        self._stream_type = settings.trtc_stream_type
        self._client = TrtcClient(
            api_credential(settings), settings.trtc_region, ClientProfile(httpProfile=http)
        )

    def start(self, spec: RelaySpec) -> str:
        """Start the relay; its TaskId."""
        request = models.StartPublishCdnStreamRequest()
        request.SdkAppId = self.sdk_app_id
        request.RoomId = spec.room
        request.RoomIdType = 1 if spec.str_room else 0
        request.WithTranscoding = 0
        agent = models.AgentParams()
        agent.UserId = spec.agent_id
        agent.UserSig = spec.agent_sig.get_secret_value()
        agent.MaxIdleTime = min(max(spec.max_idle, MIN_MAX_IDLE), MAX_MAX_IDLE)
        request.AgentParams = agent
        # Required even without transcoding: TRTC always re-encodes relayed audio.
        audio = models.McuAudioParams()
        audio.AudioEncode = self._audio
        request.AudioParams = audio
        if spec.video:
            # Without transcoding the video passes as it is; the API still wants VideoParams
            # to relay video at all ("none means an audio-only relay").
            video = models.McuVideoParams()
            video.VideoEncode = models.VideoEncode()
            video.VideoEncode.Width, video.VideoEncode.Height = 1280, 720
            video.VideoEncode.Fps, video.VideoEncode.BitRate, video.VideoEncode.Gop = 15, 1500, 2
            request.VideoParams = video
        user = models.MixUserInfo()
        user.UserId = spec.anchor
        media = models.UserMediaStream()
        media.UserInfo = user
        media.StreamType = self._stream_type
        single = models.SingleSubscribeParams()
        single.UserMediaStream = media
        request.SingleSubscribeParams = single
        target = models.McuPublishCdnParam()
        target.PublishCdnUrl = spec.publish_url.get_secret_value()
        target.IsTencentCdn = self._is_tencent_cdn
        request.PublishCdnParams = [target]
        response = self._call("StartPublishCdnStream", self._client.StartPublishCdnStream, request)
        return str(response.TaskId)

    def stop(self, task_id: str) -> bool:
        """End the relay; False when it had ended already."""
        request = models.StopPublishCdnStreamRequest()
        request.SdkAppId = self.sdk_app_id
        request.TaskId = task_id
        try:
            self._call("StopPublishCdnStream", self._client.StopPublishCdnStream, request)
        except TrtcApiError as exc:
            if exc.code == TASK_GONE:
                return False
            raise
        return True

    @staticmethod
    def _call(action: str, method: object, request: object) -> models.StartPublishCdnStreamResponse:
        try:
            return method(request)  # type: ignore[operator]
        except TencentCloudSDKException as exc:
            raise TrtcApiError(action, str(exc.code or "Error"), str(exc.message or "")) from None
        except Exception as exc:  # the SDK lets the HTTP library's errors through
            raise TrtcApiError(action, "ClientNetworkError", f"{type(exc).__name__}: {exc}") from None


__all__ = ["RelaySpec", "TrtcApiError", "TrtcConfigError", "TrtcRelayApi", "api_credential"]
