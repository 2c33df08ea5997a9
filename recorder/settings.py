"""Service configuration: environment variables with the RECORDER_ prefix (and CFS_PATH)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RecorderSettings(BaseSettings):
    """Every setting has a default that works on a laptop with no account."""

    model_config = SettingsConfigDict(env_prefix="RECORDER_", frozen=True)

    # Media in progress. CFS_PATH wins, as in the original (a mounted file system for
    # long recordings); see `work_root`.
    work_dir: Path = Path("work")
    # Where the local storage backend keeps finished files.
    storage_dir: Path = Path("recordings")
    room_backend: Literal["sim", "rtmp", "trtc"] = "sim"
    # A simulated room served by another process (`recorder sim-room`), e.g. for a worker:
    # its control URL, http://127.0.0.1:PORT. Unset: rooms of this process only.
    sim_room_url: str | None = None
    # The `rtmp` backend: anchors' streams on an RTMP server (nginx-rtmp, SRS) as
    # {rtmp_url}/{stream name}; who is publishing, from the server's statistics page.
    rtmp_url: str = "rtmp://127.0.0.1:1935/live"
    rtmp_stat_url: str = "http://127.0.0.1:8088/stat"
    # Makes stream names unguessable (a per-anchor key in the stream name), so only the
    # relay told the name can publish it.
    rtmp_stream_secret: SecretStr | None = None
    # The `trtc` backend: TRTC relays each anchor (StartPublishCdnStream, no transcoding) to
    # an RTMP ingest, where the recorder pulls it as the `rtmp` backend does (rtmp_url,
    # rtmp_stat_url, rtmp_stream_secret). The API: region, endpoint (a private or test
    # endpoint; default TRTC's own), and the API keys: these, else TENCENTCLOUD_SECRETID /
    # TENCENTCLOUD_SECRETKEY (+ TENCENTCLOUD_SESSIONTOKEN) from the environment.
    trtc_region: str = "ap-guangzhou"
    trtc_endpoint: str | None = None
    trtc_scheme: Literal["https", "http"] = "https"
    trtc_secret_id: str | None = None
    trtc_secret_key: SecretStr | None = None
    # The application's SDK secret key (TRTC console): signs the UserSigs of the extra relay
    # robots a room with several anchors needs (TRTC allows one relay per robot UserId).
    trtc_sdk_secret_key: SecretStr | None = None
    # Verifies TRTC's room and media callbacks (the callback key of the TRTC console).
    trtc_callback_key: SecretStr | None = None
    # Where relays push: 0 = your own ingest (rtmp_url), 1 = Tencent CDN, pushing to
    # trtc_publish_url and pulling from trtc_play_url ("{stream}" is the stream name).
    trtc_is_tencent_cdn: Literal[0, 1] = 0
    trtc_publish_url: str | None = None
    trtc_play_url: str | None = None
    # Which stream of each anchor: 0 camera, 1 screen sharing.
    trtc_stream_type: Literal[0, 1] = 0
    # AudioParams of every relay (TRTC always re-encodes relayed audio; AAC-LC).
    trtc_audio_sample_rate: Literal[48000, 44100, 32000, 24000, 16000, 8000] = 48000
    trtc_audio_channels: Literal[1, 2] = 2
    trtc_audio_kbps: int = Field(default=64, ge=8, le=500)
    # Recording pieces: one MPEG-TS segment about every this many seconds.
    segment_seconds: float = Field(default=6.0, gt=0)
    # A stream that delivers nothing for this long has ended (a relay's end looks like this).
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    # An anchor's stream that ends is waited for this long before their file is closed: a
    # stream back within it (a dropped connection, a relay restarting) continues the same
    # file. 0 closes the file at once; a later return is then a new file.
    reconnect_seconds: float = Field(default=15.0, ge=0)
    # Cut each recording into files of about this many seconds (at least 10), each its own
    # Files entry, for requests without MaxMediaFileDuration. A video file is cut at its
    # first keyframe at or past the limit, so it may run a GOP longer. Unset: one file.
    max_file_seconds: float | None = Field(default=None, ge=10)
    # Previews beside each stored file, with its key's stem: a poster frame (JPEG) for a
    # video file, a waveform (PNG) for an audio file.
    previews: bool = True
    # Convert each recording, and store it to COS, while it is recorded (recorder.live_finish):
    # the file is ready seconds after the stream ends. Off: both wait for the end.
    live_finish: bool = True
    # How often the room is asked who is publishing.
    poll_seconds: float = Field(default=0.5, gt=0)
    callback_attempts: int = Field(default=4, ge=1)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    callback_backoff_seconds: float = Field(default=1.0, ge=0)
    # All attempts of one callback end within this many seconds (the backoff is cut short).
    callback_deadline_seconds: float = Field(default=120.0, gt=0)
    # Signs every callback (HMAC-SHA256 of the body) so its receiver can verify it.
    callback_key: SecretStr | None = None

    # Where finished files go: "local" (storage_dir, the default: no account needed) or
    # "cos" (the request's CosConfig: bucket, region and Path).
    storage: Literal["local", "cos"] = "local"
    # Keep the local copy of a file after it is stored (the work folder is removed otherwise).
    keep_local_copy: bool = False
    # Reaching COS: by default https://{Bucket}.cos.{Region}.myqcloud.com. A private or
    # test endpoint is set with the SDK's own options: cos_ip/cos_port (the Host header
    # still names the bucket) or cos_domain (a custom domain).
    cos_scheme: Literal["http", "https"] = "https"
    cos_ip: str | None = None
    cos_port: int | None = Field(default=None, ge=1, le=65535)
    cos_domain: str | None = None
    # Per request: the SDK retries 5xx, timeouts and dropped connections this many times.
    cos_timeout_seconds: float = Field(default=30.0, gt=0)
    cos_request_retries: int = Field(default=3, ge=0, le=10)
    # Files larger than one part go up in parts of this size, this many at a time.
    cos_part_size_mb: int = Field(default=8, ge=1, le=5120)
    cos_upload_threads: int = Field(default=4, ge=1, le=32)
    # Whole-file attempts of the upload step (each resumes the parts already sent), with
    # exponential backoff starting at upload_backoff_seconds: waits of 2, 4, ... 64 s, 126 s
    # in all (Prefect's jitter makes it 104 to 151 s), so COS down for a minute or two is
    # waited out. Each attempt adds its own time: 6 s for a refused connection (the SDK's
    # cos_request_retries), up to 4 x cos_timeout_seconds for one that hangs. A file for
    # which COS never comes back (refusing connections) gets Status 0 2.5 to 3 min later.
    upload_attempts: int = Field(default=7, ge=1, le=20)
    upload_backoff_seconds: float = Field(default=2.0, ge=0)

    # The service (gateway and workers). The service key seals each request's secrets
    # (UserSig, SecretKey) into the flow run's parameters; gateway and workers share it.
    # Make one with `recorder service-key`.
    service_key: SecretStr | None = None
    # API keys the gateway accepts (comma-separated); required when it listens beyond loopback.
    api_keys: SecretStr | None = None
    # The deployment the gateway starts runs of: "flow name/deployment name".
    deployment: str = "record-room/record-room"

    @property
    def work_root(self) -> Path:
        cfs = os.environ.get("CFS_PATH")
        return Path(cfs) if cfs else self.work_dir
