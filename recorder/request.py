"""The recording request: the contract of Tencent's "single audio/video stream recording".

Keys are PascalCase exactly as the original takes them. Every check names the field and
says what is allowed, and secrets (UserSig, SecretKey) are `SecretStr` so they never show
in a repr, a log line or an error message.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# TRTC's rules for ids (TRTCParams): numeric rooms 1..4294967294; string rooms up to
# 64 bytes of letters, digits, space and !#$%&()+-:;<=.>?@[]^_{}|~,; user ids up to
# 32 bytes of letters, digits, '_' and '-'.
ROOM_ID_MAX = 4294967294
STR_ROOM_ID_CHARS = re.compile(r"^[A-Za-z0-9 !#$%&()+\-:;<=.>?@\[\]^_{}|~,]+$")
USER_ID_CHARS = re.compile(r"^[A-Za-z0-9_\-]+$")
# TRTC lets at most 50 anchors publish in one room at once.
MAX_ANCHORS = 50
# COS: BucketName-APPID, lowercase letters, digits and '-', at most 50 characters.
BUCKET_FORM = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-[0-9]+$")
REGION_FORM = re.compile(r"^[a-z]+(?:-[a-z0-9]+)+$")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
COS_PATH_MAX_BYTES = 512

RecordMode = Literal["00", "01", "02"]
MODE_NAMES: dict[str, str] = {
    "00": "MP3 audio only",
    "01": "MP4 video only",
    "02": "MP4 audio+video",
}


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8"))


def normalise_cos_path(value: str) -> str:
    """'/a//b/' -> '/a/b'; '' and '/' -> '/'. Rejects '..', '.', '\\' and control characters."""
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    if "\\" in value:
        raise ValueError("must use '/' as separator, not '\\'")
    if _utf8_len(value) > COS_PATH_MAX_BYTES:
        # COS keys are at most 850 bytes, and the room, anchor and time follow the Path.
        raise ValueError(f"must be at most {COS_PATH_MAX_BYTES} bytes")
    parts = [p for p in value.split("/") if p]
    # Percent-encoded dots too: whoever pastes a key into a URL unencoded would read '..'.
    if any(unquote(p) in (".", "..") for p in parts):
        raise ValueError("must not contain '.' or '..' segments")
    return "/" + "/".join(parts)


class CosLocation(BaseModel):
    """Where the recordings go in COS (and, optionally, the keys to write there)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    Region: str
    Bucket: str
    Path: str = "/"
    SecretId: str | None = None
    SecretKey: SecretStr | None = None

    @field_validator("Region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_FORM.fullmatch(v):
            raise ValueError("must be a COS region such as ap-guangzhou or ap-shanghai")
        return v

    @field_validator("Bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if len(v) > 50 or not BUCKET_FORM.fullmatch(v):
            raise ValueError(
                "must be BucketName-APPID such as susu-123456789: lowercase letters, "
                "digits and '-', at most 50 characters"
            )
        return v

    @field_validator("Path")
    @classmethod
    def _path(cls, v: str) -> str:
        return normalise_cos_path(v)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> CosLocation:
        if (self.SecretId is None) != (self.SecretKey is None):
            raise ValueError("SecretId and SecretKey go together: give both or neither")
        return self


class RecordingRequest(BaseModel):
    """One request: record the anchors of one room, store the files, call back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    SdkAppId: Annotated[int, Field(ge=1, le=4294967295, strict=True)]
    RoomId: Annotated[int, Field(ge=1, le=ROOM_ID_MAX, strict=True)] | None = None
    StrRoomId: str | None = None
    UserId: str
    UserSig: SecretStr
    CosConfig: CosLocation
    Callback: AnyHttpUrl | None = None
    Mode: RecordMode = "00"
    # Beyond the original: how long the room may have no anchor before recording ends.
    MaxIdleTime: Annotated[int, Field(ge=1, le=86400, strict=True)] = 300
    # Beyond the original: record only these anchors (UserIds); absent, every anchor.
    Anchors: list[str] | None = None
    # Beyond the original, as TRTC's cloud recording has it: cut each anchor's recording into
    # files of this many minutes (video at the first keyframe past it), each its own Files
    # entry. Absent: RECORDER_MAX_FILE_SECONDS, else one file per anchor's take.
    MaxMediaFileDuration: Annotated[int, Field(ge=1, le=1440, strict=True)] | None = None

    @field_validator("StrRoomId")
    @classmethod
    def _str_room_id(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if _utf8_len(v) > 64 or not STR_ROOM_ID_CHARS.fullmatch(v):
            raise ValueError(
                "must be at most 64 bytes of letters, digits, space and !#$%&()+-:;<=.>?@[]^_{}|~,"
            )
        return v

    @field_validator("UserId")
    @classmethod
    def _user_id(cls, v: str) -> str:
        if not v or _utf8_len(v) > 32 or not USER_ID_CHARS.fullmatch(v):
            raise ValueError("must be 1 to 32 letters, digits, '_' or '-'")
        return v

    @field_validator("UserSig")
    @classmethod
    def _user_sig(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("Anchors")
    @classmethod
    def _anchors(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not 1 <= len(v) <= MAX_ANCHORS:
            raise ValueError(f"must list 1 to {MAX_ANCHORS} UserIds (leave it out to record every anchor)")
        for user in v:
            if not user or _utf8_len(user) > 32 or not USER_ID_CHARS.fullmatch(user):
                shown = repr(user) if len(user) <= 40 else repr(user[:40] + "…")
                raise ValueError(f"{shown} is not a UserId: 1 to 32 letters, digits, '_' or '-'")
        if len(set(v)) != len(v):
            raise ValueError("lists a UserId twice")
        return v

    @model_validator(mode="after")
    def _one_room(self) -> RecordingRequest:
        if self.RoomId is None and self.StrRoomId is None:
            raise ValueError(
                "RoomId or StrRoomId is required: RoomId an integer from 1 to 4294967294, StrRoomId a string"
            )
        return self

    @property
    def room(self) -> str:
        """The room as TRTC names it: RoomId wins when both are given."""
        return str(self.RoomId) if self.RoomId is not None else str(self.StrRoomId)

    @property
    def room_id(self) -> int | str:
        """The room with its kind: an integer room (RoomId) or a string room (StrRoomId)."""
        return self.RoomId if self.RoomId is not None else str(self.StrRoomId)

    def public_dict(self) -> dict[str, Any]:
        """The request without secrets: safe for logs, Prefect parameters and artifacts."""
        return self.model_dump(mode="json", exclude={"UserSig": True, "CosConfig": {"SecretKey"}})


ECHOED_FIELDS = frozenset(
    {
        "SdkAppId",
        "RoomId",
        "StrRoomId",
        "UserId",
        "Mode",
        "MaxIdleTime",
        "MaxMediaFileDuration",
        "Callback",
        "CosConfig.Region",
        "CosConfig.Bucket",
        "CosConfig.Path",
        "CosConfig.SecretId",
    }
)


class RequestError(ValueError):
    """A request that cannot be recorded; each problem names its field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid request: " + "; ".join(problems))


def _describe(error: Any) -> str:
    # A check on the whole request has no location; its message names the fields.
    loc = ".".join(str(p) for p in error["loc"]) or "request"
    kind = error["type"]
    if kind == "missing":
        return f"{loc}: is required"
    if kind == "extra_forbidden":
        return f"{loc}: is not a field of the request (check the spelling; keys are PascalCase)"
    message = error["msg"].removeprefix("Value error, ")
    if kind in {"int_type", "int_parsing", "greater_than_equal", "less_than_equal", "int_from_float"}:
        bounds = {
            "SdkAppId": "an integer from 1 to 4294967295",
            "RoomId": f"an integer from 1 to {ROOM_ID_MAX}",
            "MaxIdleTime": "an integer number of seconds from 1 to 86400",
            "MaxMediaFileDuration": "an integer number of minutes from 1 to 1440",
        }
        message = "must be " + bounds.get(loc, "an integer")
    elif kind == "literal_error" and loc == "Mode":
        message = 'must be "00" (MP3 audio), "01" (MP4 video) or "02" (MP4 audio+video)'
    elif loc == "Callback":
        message = "must be an http:// or https:// URL"
    # Echo the value only of a known plain field (never UserSig or SecretKey): a whole
    # request, a CosConfig or raw JSON text may hold a secret.
    shown_input = error.get("input")
    if loc in ECHOED_FIELDS and isinstance(shown_input, (str, int, float, bool)):
        shown = repr(shown_input)
        if len(shown) <= 80:
            message += f" (got {shown})"
    return f"{loc}: {message}"


def parse_request(data: Any) -> RecordingRequest:
    """Validate a request (a dict or JSON text); raise `RequestError` naming every bad field."""
    try:
        if isinstance(data, (str, bytes)):
            return RecordingRequest.model_validate_json(data)
        return RecordingRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError([_describe(e) for e in exc.errors()]) from None
