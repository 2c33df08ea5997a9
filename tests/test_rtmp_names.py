"""Stream names of anchors on the RTMP server: made, and read back, for this room only."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from recorder.rooms.rtmp_names import anchor_of, room_token, stream_name

SECRET = SecretStr("s3cret-for-tests")
APP = 1400000000


def test_plain_names_read_as_they_are_written() -> None:
    assert stream_name(APP, "43474", "teacher", None) == "1400000000_43474_teacher"
    assert stream_name(APP, "class-7", "student_1", None) == "1400000000_class-7_student_1"
    assert anchor_of("1400000000_class-7_student_1", APP, "class-7", None) == "student_1"


@pytest.mark.parametrize("room", ["class 7|A", "a_b", "desk/7", "日本", "x41", "xmas"])
def test_rooms_beyond_letters_digits_and_dashes_are_hex(room: str) -> None:
    token = room_token(room)
    assert token == "x" + room.encode().hex()
    name = stream_name(APP, room, "agent_7", None)
    assert name == f"{APP}_{token}_agent_7"
    assert anchor_of(name, APP, room, None) == "agent_7"


def test_a_room_that_looks_hex_encoded_is_not_another_room() -> None:
    # "A" is written as itself and "x41" as hex of itself: neither reads as the other.
    assert room_token("A") == "A" and room_token("x41") != "x41"
    name_of_a = stream_name(APP, "A", "u", None)
    assert anchor_of(name_of_a, APP, "x41", None) is None
    assert anchor_of(stream_name(APP, "x41", "u", None), APP, "A", None) is None


def test_the_key_is_hmac_of_app_room_and_anchor() -> None:
    name = stream_name(APP, "class 7|A", "student_1", SECRET)
    expected = hmac.new(b"s3cret-for-tests", b"1400000000/class 7|A/student_1", hashlib.sha256).hexdigest()
    assert name == f"{APP}_{room_token('class 7|A')}_student_1_{expected[:16]}"
    assert anchor_of(name, APP, "class 7|A", SECRET) == "student_1"


@pytest.mark.parametrize("anchor", ["a", "student_1", "a_b_c_", "_", "-x-", "u" * 32, "ab_0123456789abcdef"])
def test_user_ids_with_underscores_read_back_with_and_without_a_key(anchor: str) -> None:
    for secret in (None, SECRET):
        assert anchor_of(stream_name(APP, "r", anchor, secret), APP, "r", secret) == anchor


def test_names_of_other_rooms_and_apps_are_not_this_rooms() -> None:
    name = stream_name(APP, "r1", "teacher", None)
    assert anchor_of(name, APP, "r11", None) is None
    assert anchor_of(name, APP, "r", None) is None
    assert anchor_of(name, APP + 1, "r1", None) is None
    assert anchor_of(stream_name(14, "00_r1", "teacher", None), 1400, "r1", None) is None
    # Another room's key does not open this room, even for the same anchor.
    keyed = stream_name(APP, "r2", "teacher", SECRET)
    forged = keyed.replace(f"_{room_token('r2')}_", f"_{room_token('r1')}_")
    assert anchor_of(forged, APP, "r1", SECRET) is None


@pytest.mark.parametrize(
    "name",
    [
        "1400000000_r_teacher",  # no key at all
        "1400000000_r_teacher_0000000000000000",  # a guessed key
        "1400000000_r_teacher_" + "é" * 16,  # not even hex
        "1400000000_r_",
        "1400000000_r__" + "0" * 16,
    ],
)
def test_with_a_secret_a_name_without_the_right_key_is_nobody(name: str) -> None:
    assert anchor_of(name, APP, "r", SECRET) is None


def test_a_key_made_with_another_secret_is_refused() -> None:
    name = stream_name(APP, "r", "teacher", SecretStr("another"))
    assert anchor_of(name, APP, "r", SECRET) is None
    # Without a secret the recorder cannot check keys: the whole rest is the UserId, which a
    # key makes too long or leaves as a different anchor.
    assert anchor_of(name, APP, "r", None) != "teacher"


@pytest.mark.parametrize("anchor", ["", "u" * 33, "a b", "a/b", "ü"])
def test_names_are_not_made_for_user_ids_trtc_refuses(anchor: str) -> None:
    with pytest.raises(ValueError, match="UserId"):
        stream_name(APP, "r", anchor, None)
    assert anchor_of(f"{APP}_r_{anchor}", APP, "r", None) is None


def test_an_empty_room_has_no_name() -> None:
    with pytest.raises(ValueError, match="room"):
        stream_name(APP, "", "u", None)
