"""`scripts/demo_cos.py` as a user runs it: the demo stored into the loopback COS endpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.media_check import ffprobe

ROOT = Path(__file__).resolve().parents[1]


def test_the_cos_demo_stores_byte_identical_files(tmp_path: Path) -> None:
    env = os.environ | {
        "PREFECT_HOME": str(tmp_path / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TMPDIR": str(tmp_path),  # the demo keeps its work folder under here
    }
    for name in [n for n in env if n.startswith(("RECORDER_", "TENCENTCLOUD_")) or n == "CFS_PATH"]:
        env.pop(name)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_cos.py"), "--mode", "00"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "2 of 2 object(s) byte-identical to the local files" in result.stdout
    bucket_url = re.escape("https://demo-1250000000.cos.ap-guangzhou.myqcloud.com/")
    urls = re.findall(rf'"RecordFile": "({bucket_url}[^"]+)"', output)
    assert len(urls) == 2 and all(url.endswith(".mp3") for url in urls)
    # What was compared is a real recording: the local copies are MP3s that ffprobe reads.
    compared = re.findall(r"byte-identical to (\S+\.mp3)", result.stdout)
    assert len(compared) == 2
    for path in compared:
        assert ffprobe(Path(path)).codec("audio") == "mp3"
