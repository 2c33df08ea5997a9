"""parse_request: every bad field is named and explained; secrets never show."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from recorder.request import RecordingRequest, RequestError, parse_request

USER_SIG = "sig-TOPSECRET-1"
SECRET_KEY = "key-TOPSECRET-2"
SECRETS = (USER_SIG, SECRET_KEY)

BASE: dict[str, Any] = {
    "SdkAppId": 1400000001,
    "RoomId": 1234,
    "UserId": "recorder_1",
    "UserSig": USER_SIG,
    "CosConfig": {
        "Region": "ap-guangzhou",
        "Bucket": "susu-123456789",
        "Path": "/trtc",
        "SecretId": "AKIDexample",
        "SecretKey": SECRET_KEY,
    },
}

MISSING = object()


def changed(*changes: tuple[str, Any]) -> dict[str, Any]:
    """A deep copy of BASE with each dotted key set to a value, or removed when it is MISSING."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes:
        *parents, key = dotted.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        if value is MISSING:
            del target[key]
        else:
            target[key] = value
    return data


def problems_of(data: Any) -> list[str]:
    with pytest.raises(RequestError) as info:
        parse_request(data)
    return info.value.problems


SDKAPPID_RANGE = "an integer from 1 to 4294967295"
ROOMID_RANGE = "an integer from 1 to 4294967294"
STR_ROOM_RULE = "at most 64 bytes of letters, digits, space"
USER_ID_RULE = "1 to 32 letters, digits, '_' or '-'"
REGION_RULE = "a COS region such as ap-guangzhou"
BUCKET_RULE = "BucketName-APPID such as susu-123456789"
MODE_RULE = 'must be "00" (MP3 audio), "01" (MP4 video) or "02" (MP4 audio+video)'
URL_RULE = "an http:// or https:// URL"
IDLE_RULE = "an integer number of seconds from 1 to 86400"

INVALID = [
    pytest.param(changed(("SdkAppId", MISSING)), "SdkAppId:", "is required", id="sdkappid-missing"),
    pytest.param(changed(("SdkAppId", "1400000001")), "SdkAppId:", SDKAPPID_RANGE, id="sdkappid-string"),
    pytest.param(changed(("SdkAppId", 0)), "SdkAppId:", SDKAPPID_RANGE, id="sdkappid-zero"),
    pytest.param(changed(("SdkAppId", 4294967296)), "SdkAppId:", SDKAPPID_RANGE, id="sdkappid-too-big"),
    pytest.param(changed(("RoomId", 0)), "RoomId:", ROOMID_RANGE, id="roomid-zero"),
    pytest.param(changed(("RoomId", -1)), "RoomId:", ROOMID_RANGE, id="roomid-negative"),
    pytest.param(changed(("RoomId", 4294967295)), "RoomId:", ROOMID_RANGE, id="roomid-too-big"),
    pytest.param(changed(("RoomId", 12.5)), "RoomId:", ROOMID_RANGE, id="roomid-float"),
    pytest.param(changed(("RoomId", "abc")), "RoomId:", ROOMID_RANGE, id="roomid-string"),
    pytest.param(changed(("RoomId", MISSING)), "request:", "RoomId or StrRoomId is required", id="no-room"),
    pytest.param(changed(("StrRoomId", "a" * 65)), "StrRoomId:", STR_ROOM_RULE, id="strroomid-65-bytes"),
    pytest.param(
        # 22 characters, 66 bytes in UTF-8.
        changed(("StrRoomId", "房" * 22)),
        "StrRoomId:",
        STR_ROOM_RULE,
        id="strroomid-multibyte-over-64-bytes",
    ),
    pytest.param(changed(("StrRoomId", "a/b")), "StrRoomId:", STR_ROOM_RULE, id="strroomid-slash"),
    pytest.param(changed(("StrRoomId", "a*b")), "StrRoomId:", STR_ROOM_RULE, id="strroomid-star"),
    pytest.param(changed(("UserId", MISSING)), "UserId:", "is required", id="userid-missing"),
    pytest.param(changed(("UserId", "")), "UserId:", USER_ID_RULE, id="userid-empty"),
    pytest.param(changed(("UserId", "rec 1")), "UserId:", USER_ID_RULE, id="userid-space"),
    pytest.param(changed(("UserId", "u" * 33)), "UserId:", USER_ID_RULE, id="userid-33-chars"),
    pytest.param(changed(("UserId", "rec/1")), "UserId:", USER_ID_RULE, id="userid-slash"),
    pytest.param(changed(("UserSig", MISSING)), "UserSig:", "is required", id="usersig-missing"),
    pytest.param(changed(("UserSig", "")), "UserSig:", "must not be empty", id="usersig-empty"),
    pytest.param(changed(("UserSig", " \t ")), "UserSig:", "must not be empty", id="usersig-whitespace"),
    pytest.param(changed(("CosConfig", MISSING)), "CosConfig:", "is required", id="cosconfig-missing"),
    pytest.param(
        changed(("CosConfig.Region", "Guangzhou")), "CosConfig.Region:", REGION_RULE, id="region-name"
    ),
    pytest.param(
        changed(("CosConfig.Region", "ap_guangzhou")),
        "CosConfig.Region:",
        REGION_RULE,
        id="region-underscore",
    ),
    pytest.param(changed(("CosConfig.Region", "")), "CosConfig.Region:", REGION_RULE, id="region-empty"),
    pytest.param(
        changed(("CosConfig.Bucket", "susu")), "CosConfig.Bucket:", BUCKET_RULE, id="bucket-no-appid"
    ),
    pytest.param(
        changed(("CosConfig.Bucket", "Susu-123456789")),
        "CosConfig.Bucket:",
        BUCKET_RULE,
        id="bucket-uppercase",
    ),
    pytest.param(
        # 51 characters: one over COS's limit.
        changed(("CosConfig.Bucket", "b" * 41 + "-123456789")),
        "CosConfig.Bucket:",
        "at most 50 characters",
        id="bucket-too-long",
    ),
    pytest.param(
        changed(("CosConfig.Bucket", "-susu-123456789")),
        "CosConfig.Bucket:",
        BUCKET_RULE,
        id="bucket-leading-hyphen",
    ),
    pytest.param(
        changed(("CosConfig.Path", "/trtc/../other")),
        "CosConfig.Path:",
        "must not contain '.' or '..' segments",
        id="path-dotdot",
    ),
    pytest.param(
        changed(("CosConfig.Path", "/trtc\x00x")),
        "CosConfig.Path:",
        "must not contain control characters",
        id="path-nul",
    ),
    pytest.param(
        changed(("CosConfig.Path", "/trtc\nx")),
        "CosConfig.Path:",
        "must not contain control characters",
        id="path-newline",
    ),
    pytest.param(
        changed(("CosConfig.Path", "trtc\\x")),
        "CosConfig.Path:",
        "must use '/' as separator",
        id="path-backslash",
    ),
    pytest.param(
        changed(("CosConfig.SecretKey", MISSING)),
        "CosConfig:",
        "SecretId and SecretKey go together",
        id="secretid-without-secretkey",
    ),
    pytest.param(changed(("Mode", "03")), "Mode:", MODE_RULE, id="mode-03"),
    pytest.param(changed(("Mode", 2)), "Mode:", MODE_RULE, id="mode-int"),
    pytest.param(changed(("Mode", "mp3")), "Mode:", MODE_RULE, id="mode-name"),
    pytest.param(changed(("Callback", "ftp://x")), "Callback:", URL_RULE, id="callback-ftp"),
    pytest.param(changed(("Callback", "not a url")), "Callback:", URL_RULE, id="callback-not-url"),
    pytest.param(changed(("MaxIdleTime", 0)), "MaxIdleTime:", IDLE_RULE, id="maxidletime-zero"),
    pytest.param(changed(("MaxIdleTime", "abc")), "MaxIdleTime:", IDLE_RULE, id="maxidletime-string"),
    pytest.param(
        changed(("MaxMediaFileDuration", 0)),
        "MaxMediaFileDuration:",
        "an integer number of minutes from 1 to 1440",
        id="maxmediafileduration-zero",
    ),
    pytest.param(
        changed(("MaxMediaFileDuration", 1441)),
        "MaxMediaFileDuration:",
        "an integer number of minutes from 1 to 1440",
        id="maxmediafileduration-over-a-day",
    ),
    pytest.param(
        changed(("CosConfig.Path", "a" * 513)), "CosConfig.Path:", "at most 512 bytes", id="path-long"
    ),
    pytest.param(
        changed(("CosConfig.Path", "/x/%2e%2E/y")), "CosConfig.Path:", "'..' segments", id="path-dots"
    ),
    pytest.param(changed(("Anchors", [])), "Anchors:", "must list 1 to 50 UserIds", id="anchors-empty"),
    pytest.param(changed(("Anchors", ["a"] * 51)), "Anchors:", "must list 1 to 50 UserIds", id="anchors-51"),
    pytest.param(
        changed(("Anchors", ["ok", "bad id"])), "Anchors:", "'bad id' is not a UserId", id="anchors-bad"
    ),
    pytest.param(changed(("Anchors", ["t", "t"])), "Anchors:", "lists a UserId twice", id="anchors-twice"),
    pytest.param(changed(("Anchors", "teacher")), "Anchors:", "list", id="anchors-not-a-list"),
    pytest.param(
        changed(("Roomid", 1234)),
        "Roomid:",
        "is not a field of the request (check the spelling; keys are PascalCase)",
        id="unknown-key-typo",
    ),
]


@pytest.mark.parametrize(("data", "field", "allowed"), INVALID)
def test_invalid_request_names_the_field_and_what_is_allowed(
    data: dict[str, Any], field: str, allowed: str
) -> None:
    problems = problems_of(data)
    matching = [p for p in problems if p.startswith(field + " ")]
    assert matching, f"no problem for {field!r} in {problems}"
    assert any(allowed in p for p in matching), f"{allowed!r} not said in {matching}"


@pytest.mark.parametrize(("data", "field", "allowed"), INVALID)
def test_one_change_gives_exactly_one_problem(data: dict[str, Any], field: str, allowed: str) -> None:
    assert len(problems_of(data)) == 1


def test_error_text_lists_every_problem() -> None:
    data = changed(("RoomId", 0), ("UserId", "a b"), ("Mode", "03"))
    with pytest.raises(RequestError) as info:
        parse_request(data)
    error = info.value
    assert isinstance(error, ValueError)
    assert sorted(p.split(":")[0] for p in error.problems) == ["Mode", "RoomId", "UserId"]
    assert str(error) == "invalid request: " + "; ".join(error.problems)


def test_problem_echoes_the_bad_value() -> None:
    assert problems_of(changed(("RoomId", 0))) == [f"RoomId: must be {ROOMID_RANGE} (got 0)"]


# --- valid requests -------------------------------------------------------------------


def test_base_request_is_valid() -> None:
    request = parse_request(BASE)
    assert isinstance(request, RecordingRequest)
    assert request.SdkAppId == 1400000001
    assert request.UserId == "recorder_1"
    assert request.CosConfig.Region == "ap-guangzhou"
    assert request.CosConfig.Bucket == "susu-123456789"
    assert request.CosConfig.SecretId == "AKIDexample"


def test_room_id_wins_when_both_are_given() -> None:
    request = parse_request(changed(("StrRoomId", "live room|1")))
    assert request.room == "1234"
    assert request.RoomId == 1234
    assert request.StrRoomId == "live room|1"


def test_str_room_id_alone_names_the_room() -> None:
    request = parse_request(changed(("RoomId", MISSING), ("StrRoomId", "live room|1")))
    assert request.RoomId is None
    assert request.room == "live room|1"


def test_empty_str_room_id_counts_as_absent() -> None:
    request = parse_request(changed(("StrRoomId", "")))
    assert request.StrRoomId is None
    assert request.room == "1234"


@pytest.mark.parametrize(
    ("changes", "attribute", "value"),
    [
        pytest.param((("SdkAppId", 4294967295),), "SdkAppId", 4294967295, id="sdkappid-max"),
        pytest.param((("RoomId", 1),), "RoomId", 1, id="roomid-min"),
        pytest.param((("RoomId", 4294967294),), "RoomId", 4294967294, id="roomid-max"),
        pytest.param((("StrRoomId", "r" * 64),), "StrRoomId", "r" * 64, id="strroomid-64-bytes"),
        pytest.param((("UserId", "u" * 32),), "UserId", "u" * 32, id="userid-32-chars"),
        pytest.param((("MaxIdleTime", 86400),), "MaxIdleTime", 86400, id="maxidletime-max"),
        pytest.param(
            (("MaxMediaFileDuration", 1),), "MaxMediaFileDuration", 1, id="maxmediafileduration-min"
        ),
        pytest.param(
            (("MaxMediaFileDuration", 1440),), "MaxMediaFileDuration", 1440, id="maxmediafileduration-max"
        ),
        pytest.param((("Mode", "02"),), "Mode", "02", id="mode-02"),
    ],
)
def test_values_at_the_limits_are_accepted(
    changes: tuple[tuple[str, Any], ...], attribute: str, value: Any
) -> None:
    assert getattr(parse_request(changed(*changes)), attribute) == value


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        pytest.param("", "/", id="empty"),
        pytest.param("/", "/", id="root"),
        pytest.param("trtc", "/trtc", id="relative"),
        pytest.param("/a//b/", "/a/b", id="doubled-and-trailing-slashes"),
    ],
)
def test_cos_path_is_normalised(path: str, normalised: str) -> None:
    assert parse_request(changed(("CosConfig.Path", path))).CosConfig.Path == normalised


def test_defaults() -> None:
    data = changed(("CosConfig.Path", MISSING))
    request = parse_request(data)
    assert request.Mode == "00"
    assert request.MaxIdleTime == 300
    assert request.Callback is None
    assert request.StrRoomId is None
    assert request.CosConfig.Path == "/"


def test_callback_https_url_is_kept() -> None:
    request = parse_request(changed(("Callback", "https://example.com/hook?x=1")))
    assert str(request.Callback) == "https://example.com/hook?x=1"


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_json_text_is_accepted(as_bytes: bool) -> None:
    text = json.dumps(changed(("Mode", "01")))
    request = parse_request(text.encode() if as_bytes else text)
    assert request.room == "1234"
    assert request.Mode == "01"
    assert request.UserSig.get_secret_value() == USER_SIG


def test_invalid_json_fields_are_named() -> None:
    problems = problems_of(json.dumps(changed(("RoomId", "abc"))))
    assert len(problems) == 1
    assert problems[0].startswith("RoomId: must be " + ROOMID_RANGE)


# --- secrets --------------------------------------------------------------------------


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_secrets_are_kept_but_hidden() -> None:
    request = parse_request(BASE)
    assert request.UserSig.get_secret_value() == USER_SIG
    assert request.CosConfig.SecretKey is not None
    assert request.CosConfig.SecretKey.get_secret_value() == SECRET_KEY
    assert_no_secret(repr(request))
    assert_no_secret(str(request))
    assert_no_secret(request.model_dump_json())


def test_public_dict_has_no_secrets() -> None:
    public = parse_request(BASE).public_dict()
    assert_no_secret(json.dumps(public))
    assert "UserSig" not in public
    assert "SecretKey" not in public["CosConfig"]
    # What is not secret stays, so the dict is still useful in logs.
    assert public["CosConfig"]["SecretId"] == "AKIDexample"
    assert public["RoomId"] == 1234
    assert public["UserId"] == "recorder_1"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(changed(("RoomId", "abc")), id="other-field-invalid"),
        pytest.param(changed(("RoomId", MISSING)), id="request-level-check"),
        pytest.param(changed(("CosConfig.SecretId", MISSING)), id="secretkey-without-secretid"),
        pytest.param(
            changed(("CosConfig.SecretId", MISSING), ("CosConfig.Region", "x")),
            id="secretkey-without-secretid-and-bad-region",
        ),
        pytest.param(changed(("UserSig", [USER_SIG])), id="usersig-wrong-type"),
        pytest.param(changed(("UserSig", {"sig": USER_SIG})), id="usersig-object"),
        pytest.param(changed(("CosConfig.SecretKey", [SECRET_KEY])), id="secretkey-wrong-type"),
        pytest.param(changed(("CosConfig.SecretKey", 12345), ("UserSig", 12345)), id="secrets-as-ints"),
        pytest.param(changed(("usersig", USER_SIG)), id="secret-under-misspelt-key"),
        pytest.param(changed(("CosConfig.Secretkey", SECRET_KEY)), id="secretkey-under-misspelt-key"),
        pytest.param(json.dumps(changed(("Mode", "03"))), id="json-text-invalid-field"),
        pytest.param(json.dumps(changed(("CosConfig.SecretId", MISSING))), id="json-text-secretkey-alone"),
    ],
)
def test_errors_never_show_secrets(data: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(data)
    assert info.value.problems
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))
    for problem in info.value.problems:
        assert_no_secret(problem)


def test_bad_secret_values_are_never_echoed() -> None:
    problems = problems_of(changed(("UserSig", 987654321), ("CosConfig.SecretKey", 123456789)))
    assert sorted(p.split(":")[0] for p in problems) == ["CosConfig.SecretKey", "UserSig"]
    assert not any("987654321" in p or "123456789" in p for p in problems)
    assert problems_of(changed(("UserSig", " \t "))) == ["UserSig: must not be empty"]


def test_secretkey_without_secretid_is_named() -> None:
    problems = problems_of(changed(("CosConfig.SecretId", MISSING)))
    assert problems == ["CosConfig: SecretId and SecretKey go together: give both or neither"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"UserSig": "' + USER_SIG + '"', id="truncated-json"),
        pytest.param('{"UserSig": "' + USER_SIG + '"}}', id="json-trailing-characters"),
        pytest.param(
            changed(("CosConfig", json.dumps({"SecretKey": SECRET_KEY}))), id="cosconfig-double-encoded"
        ),
    ],
)
def test_text_holding_a_secret_is_never_echoed(data: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(data)
    assert_no_secret(str(info.value))


def test_anchors_are_kept_in_order_and_room_id_keeps_its_kind() -> None:
    request = parse_request(changed(("Anchors", ["teacher", "student_1"])))
    assert request.Anchors == ["teacher", "student_1"]
    assert request.room_id == request.RoomId and isinstance(request.room_id, int)
    by_name = parse_request(changed(("RoomId", MISSING), ("StrRoomId", "1234")))
    assert by_name.room_id == "1234"  # a string room, not integer room 1234
