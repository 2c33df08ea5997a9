"""A real nginx-rtmp for tests, run from deployments/nginx-rtmp.conf itself, and a publisher.

`NginxRtmp(tmp_dir)` takes the deployed configuration and changes only what a test run
must: free loopback ports for RTMP and the statistics page, the module's location on this
machine, and temporary paths under `tmp_dir`. Everything else (live on, idle_streams,
wait_key, who may play, `rtmp_stat all`) is what production runs, so the tests check it.

`Publisher(url, seconds)` pushes a test pattern and a tone (H.264/AAC, as a TRTC relay sends)
with the ffmpeg command, paced in real time, as a relay pushes into the server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOYED_CONF = ROOT / "deployments" / "nginx-rtmp.conf"
INSTALL = "apt-get install nginx-light libnginx-mod-rtmp"
LOOPBACK = "127.0.0.1"
MODULE = "ngx_rtmp_module.so"

# Bounds on every wait: nginx starts in tens of milliseconds; these only stop a hang.
START_SECONDS = 10.0
STOP_SECONDS = 5.0
ATTEMPTS = 3  # a free port can be taken by someone else between finding it and binding it


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        _fail(f"nginx is needed for the rtmp room tests: {INSTALL}")
    assert found is not None
    return found


def find_rtmp_module(nginx: str) -> Path:
    """ngx_rtmp_module.so where this nginx keeps its modules (Debian: /usr/lib/nginx/modules)."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10).stderr
    places = [Path(m) for m in re.findall(r"--modules-path=(\S+)", built)]
    places += [Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules")]
    for place in places:
        if (place / MODULE).is_file():
            return place / MODULE
    _fail(f"nginx's RTMP module ({MODULE}) is not installed in {', '.join(map(str, places))}: {INSTALL}")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    """One substitution that must apply exactly once: if the deployed file changes shape, the
    test says so instead of silently testing something else."""
    changed, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"{DEPLOYED_CONF} no longer has exactly one match of {pattern!r} ({count})")
    return changed


def derived_config(module: Path, rtmp_port: int, http_port: int, temp: Path) -> str:
    """deployments/nginx-rtmp.conf with this run's ports, module and temporary paths."""
    text = DEPLOYED_CONF.read_text()
    text = _replace_once(text, r"^load_module \S+;", f"load_module {module};")
    text = _replace_once(text, r"^(\s*)listen 1935;", rf"\g<1>listen {LOOPBACK}:{rtmp_port};")
    text = _replace_once(text, r"^(\s*)listen 127\.0\.0\.1:8088;", rf"\g<1>listen {LOOPBACK}:{http_port};")
    # The built-in temporary paths are under /var/lib/nginx: not ours to write in a test.
    temp_paths = "".join(
        f"    {kind}_temp_path {temp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return _replace_once(text, r"^http \{\n", "http {\n" + temp_paths)


class NginxRtmp:
    """nginx-rtmp on free loopback ports for the length of a `with` block."""

    def __init__(self, tmp_dir: Path) -> None:
        self.dir = tmp_dir
        self.nginx = find_nginx()
        self.module = find_rtmp_module(self.nginx)
        self.rtmp_port = 0
        self.http_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://{LOOPBACK}:{self.rtmp_port}/live"

    @property
    def stat_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/stat"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    def settings_env(self) -> dict[str, str]:
        """The recorder's settings for this server (RECORDER_* environment variables)."""
        return {
            "RECORDER_ROOM_BACKEND": "rtmp",
            "RECORDER_RTMP_URL": self.rtmp_url,
            "RECORDER_RTMP_STAT_URL": self.stat_url,
        }

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> NginxRtmp:
        self.dir.mkdir(parents=True, exist_ok=True)
        temp = self.dir / "temp"
        temp.mkdir(exist_ok=True)
        problem = ""
        for _ in range(ATTEMPTS):
            self.rtmp_port, self.http_port = _free_port(), _free_port()
            conf = self.dir / "nginx.conf"
            conf.write_text(derived_config(self.module, self.rtmp_port, self.http_port, temp))
            directives = f"daemon off; pid {self.dir / 'nginx.pid'}; error_log {self.error_log} info;"
            # A file, not a pipe nobody reads: nginx must never block on its stderr.
            with (self.dir / "stderr.log").open("ab") as stderr:
                self._process = subprocess.Popen(
                    [self.nginx, "-c", str(conf), "-p", f"{self.dir}/", "-g", directives],
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    # Its own process group: if the master has to be killed, its worker goes too.
                    start_new_session=True,
                )
            problem = self._wait_ready()
            if not problem:
                return self
            self.stop()
        _fail(f"nginx-rtmp did not start: {problem}")
        raise AssertionError("unreachable")

    def _wait_ready(self) -> str:
        """'' once the statistics page answers; else why not (within START_SECONDS)."""
        assert self._process is not None
        deadline = time.monotonic() + START_SECONDS
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    logs = [self.dir / "stderr.log", self.error_log]
                    said = " ".join(p.read_text().strip() for p in logs if p.exists())
                    return f"exit status {self._process.returncode}: {said}"
                try:
                    if client.get(self.stat_url).status_code == httpx.codes.OK:
                        return ""
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        return f"{self.stat_url} did not answer within {START_SECONDS:g} s"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGTERM, nginx's fast shutdown: SIGQUIT (graceful) would wait for every RTMP
        # connection to end, and a player or publisher may never end on its own.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group is nginx's alone (start_new_session)
            process.wait(timeout=STOP_SECONDS)

    def __enter__(self) -> NginxRtmp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Publisher:
    """ffmpeg pushing `seconds` of a test pattern and a tone to `url`, in real time, as a
    relay does. Stops with the `with` block at the latest."""

    def __init__(
        self, url: str, seconds: float, *, video: bool = True, audio: bool = True, gop_seconds: float = 2.0
    ) -> None:
        self.url = url
        self.seconds = seconds
        fps = 25
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
        if video:
            command += ["-re", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={fps}"]
        if audio:
            command += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        if video:
            # A keyframe every 2 s, as TRTC sends: a player joining mid-way waits for one.
            gop = str(round(gop_seconds * fps))
            command += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", gop]
            command += ["-pix_fmt", "yuv420p"]
        if audio:
            command += ["-c:a", "aac", "-ac", "1"]
        command += ["-t", f"{seconds:g}", "-f", "flv", url]
        self.command = command
        self.started_at = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Publisher:
        self.started_at = time.monotonic()
        self._process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait (bounded) for ffmpeg to finish its `seconds`; its exit status."""
        assert self._process is not None
        return self._process.wait(timeout=timeout)

    def errors(self) -> str:
        if self._process is None or self._process.poll() is None or self._process.stderr is None:
            return ""
        return self._process.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # ffmpeg ends its output cleanly on SIGTERM
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_SECONDS)
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
