"""The result document: returned by the flow and POSTed to the request's Callback."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from recorder.request import RecordingRequest


class FileEntry(BaseModel):
    """One recorded file: which anchor, where it is, and whether it worked."""

    model_config = ConfigDict(frozen=True)

    UserId: str
    RecordFile: str
    Status: Literal[0, 1]
    Message: str


class ResultDocument(BaseModel):
    model_config = ConfigDict(frozen=True)

    SdkAppId: str
    RoomId: str
    StrRoomId: str
    UserId: str
    Files: list[FileEntry]

    @classmethod
    def for_request(cls, request: RecordingRequest, files: list[FileEntry]) -> ResultDocument:
        return cls(
            SdkAppId=str(request.SdkAppId),
            RoomId="" if request.RoomId is None else str(request.RoomId),
            StrRoomId=request.StrRoomId or "",
            UserId=request.UserId,
            Files=files,
        )

    @property
    def failed(self) -> list[FileEntry]:
        return [f for f in self.Files if f.Status == 0]
