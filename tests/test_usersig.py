"""UserSig (TLS signature v2): checked by decoding it step by step as Tencent documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from recorder.usersig import UserSigError, generate_usersig, verify_usersig

# The key of Tencent's own examples (tls-sig-api-v2), a public test value.
KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
ROOT = Path(__file__).resolve().parents[1]


def _decode_as_documented(usersig: str) -> dict[str, object]:
    # URL-safe variant: '*' '-' '_' stand for '+' '/' '='; then base64, then zlib, then JSON.
    standard = usersig.replace("*", "+").replace("-", "/").replace("_", "=")
    return dict(json.loads(zlib.decompress(base64.b64decode(standard))))


def _documented_signature(ticket: dict[str, object]) -> str:
    content = (
        f"TLS.identifier:{ticket['TLS.identifier']}\n"
        f"TLS.sdkappid:{ticket['TLS.sdkappid']}\n"
        f"TLS.time:{ticket['TLS.time']}\n"
        f"TLS.expire:{ticket['TLS.expire']}\n"
    )
    return base64.b64encode(hmac.new(KEY.encode(), content.encode(), hashlib.sha256).digest()).decode()


def test_a_usersig_decodes_and_verifies_with_the_documented_algorithm() -> None:
    usersig = generate_usersig(1400000000, KEY, "user_55952145", expire=86400, now=1_700_000_000)
    assert set(usersig) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-_")
    ticket = _decode_as_documented(usersig)
    assert ticket["TLS.ver"] == "2.0"
    assert ticket["TLS.identifier"] == "user_55952145"
    assert ticket["TLS.sdkappid"] == 1400000000
    assert (ticket["TLS.time"], ticket["TLS.expire"]) == (1_700_000_000, 86400)
    assert ticket["TLS.sig"] == _documented_signature(ticket)


def test_verify_accepts_its_own_and_refuses_a_wrong_key_a_forgery_and_an_old_one() -> None:
    usersig = generate_usersig(1400000000, KEY, "rec_1", expire=3600, now=1_700_000_000)
    found = verify_usersig(usersig, KEY, now=1_700_000_100)
    assert (found.user_id, found.sdk_app_id, found.expires_at) == ("rec_1", 1400000000, 1_700_003_600)
    with pytest.raises(UserSigError, match="not signed with this key"):
        verify_usersig(usersig, "another-key", now=1_700_000_100)
    with pytest.raises(UserSigError, match="expired"):
        verify_usersig(usersig, KEY, now=1_700_003_601)
    # Someone else's identity in a ticket signed for rec_1.
    ticket = _decode_as_documented(usersig) | {"TLS.identifier": "admin"}
    forged = base64.b64encode(zlib.compress(json.dumps(ticket).encode())).decode()
    forged = forged.replace("+", "*").replace("/", "-").replace("=", "_")
    with pytest.raises(UserSigError, match="not signed with this key"):
        verify_usersig(forged, KEY, now=1_700_000_100)
    with pytest.raises(UserSigError, match="not a UserSig"):
        verify_usersig("eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpq", KEY)


def test_the_command_prints_one_that_verifies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RECORDER_TRTC_SDK_SECRET_KEY"}
    command = [sys.executable, "-m", "flows.cli", "usersig", "--sdkappid", "1400000000", "--userid", "u_1"]
    printed = subprocess.run(
        [*command, "--key", KEY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert verify_usersig(printed.stdout.strip(), KEY).user_id == "u_1"
    from_env = subprocess.run(
        command,
        cwd=ROOT,
        env=env | {"RECORDER_TRTC_SDK_SECRET_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify_usersig(from_env.stdout.strip(), KEY).sdk_app_id == 1400000000
    missing = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "RECORDER_TRTC_SDK_SECRET_KEY" in missing.stderr
