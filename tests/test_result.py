"""The result document: ids as strings, one entry per file, failures easy to find."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from recorder.request import RecordingRequest, parse_request
from recorder.result import FileEntry, ResultDocument

COS: dict[str, Any] = {"Region": "ap-guangzhou", "Bucket": "susu-123456789"}


def request(**rooms: Any) -> RecordingRequest:
    return parse_request(
        {"SdkAppId": 1400000001, "UserId": "recorder_1", "UserSig": "sig", "CosConfig": COS, **rooms}
    )


def entry(user: str, status: int, message: str = "") -> FileEntry:
    return FileEntry(UserId=user, RecordFile=f"file:///rec/{user}.mp3", Status=status, Message=message)


def test_ids_are_strings_for_a_numeric_room() -> None:
    document = ResultDocument.for_request(request(RoomId=1234), [])
    assert document.SdkAppId == "1400000001"
    assert document.RoomId == "1234"
    assert document.StrRoomId == ""
    assert document.UserId == "recorder_1"
    assert document.Files == []


def test_str_room_only_gives_an_empty_room_id() -> None:
    document = ResultDocument.for_request(request(StrRoomId="live room|1"), [])
    assert document.RoomId == ""
    assert document.StrRoomId == "live room|1"


def test_both_rooms_are_reported() -> None:
    document = ResultDocument.for_request(request(RoomId=1234, StrRoomId="live"), [])
    assert (document.RoomId, document.StrRoomId) == ("1234", "live")


def test_document_serialises_with_the_original_keys() -> None:
    files = [entry("anchor_1", 1), entry("anchor_2", 0, "upload failed")]
    dumped = ResultDocument.for_request(request(RoomId=1234), files).model_dump(mode="json")
    assert dumped == {
        "SdkAppId": "1400000001",
        "RoomId": "1234",
        "StrRoomId": "",
        "UserId": "recorder_1",
        "Files": [
            {"UserId": "anchor_1", "RecordFile": "file:///rec/anchor_1.mp3", "Status": 1, "Message": ""},
            {
                "UserId": "anchor_2",
                "RecordFile": "file:///rec/anchor_2.mp3",
                "Status": 0,
                "Message": "upload failed",
            },
        ],
    }


def test_file_entry_has_exactly_four_keys() -> None:
    dumped = entry("anchor_1", 1).model_dump(mode="json")
    assert list(dumped) == ["UserId", "RecordFile", "Status", "Message"]
    assert isinstance(dumped["Status"], int)


def test_failed_lists_status_zero_entries_in_order() -> None:
    ok, bad_1, bad_2 = entry("a", 1), entry("b", 0, "no media"), entry("c", 0, "upload failed")
    document = ResultDocument.for_request(request(RoomId=1), [bad_1, ok, bad_2])
    assert document.failed == [bad_1, bad_2]


def test_failed_is_empty_when_everything_worked() -> None:
    document = ResultDocument.for_request(request(RoomId=1), [entry("a", 1), entry("b", 1)])
    assert document.failed == []


@pytest.mark.parametrize("status", [0, 1])
def test_status_zero_and_one_are_accepted(status: int) -> None:
    assert entry("a", status).Status == status


@pytest.mark.parametrize("status", [2, -1, "ok"])
def test_other_status_values_are_rejected(status: Any) -> None:
    with pytest.raises(ValidationError) as info:
        entry("a", status)
    assert info.value.errors()[0]["loc"] == ("Status",)
