"""Object keys and the local storage backend (real files under tmp_path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import pytest

from recorder.storage.base import StorageError
from recorder.storage.keys import recording_key
from recorder.storage.local import LocalStorage

STARTED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
STAMP = "20240506T070809123456Z"


def path_of(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(url2pathname(parsed.path))


def source_file(tmp_path: Path, content: bytes = b"ID3 recording bytes") -> Path:
    source = tmp_path / "work" / "recording.mp3"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    return source


# --- recording_key --------------------------------------------------------------------


def test_key_layout() -> None:
    key = recording_key("/trtc/rec", "1234", "anchor_1", STARTED, "mp4")
    assert key == f"trtc/rec/1234/anchor_1_{STAMP}.mp4"


def test_root_path_gives_no_leading_slash() -> None:
    key = recording_key("/", "1234", "anchor_1", STARTED, "mp3")
    assert key == f"1234/anchor_1_{STAMP}.mp3"


def test_stamp_is_utc() -> None:
    beijing = STARTED.astimezone(timezone(timedelta(hours=8)))
    assert beijing.hour == 15
    assert recording_key("/", "1", "a", beijing, "mp3") == f"1/a_{STAMP}.mp3"


@pytest.mark.parametrize(
    ("room", "encoded"),
    [
        pytest.param("live room", "live%20room", id="space"),
        pytest.param("a|b", "a%7Cb", id="pipe"),
        pytest.param("a?b", "a%3Fb", id="question-mark"),
        pytest.param("a/b", "a%2Fb", id="slash"),
        pytest.param("a/../b", "a%2F..%2Fb", id="dotdot-inside"),
        pytest.param("100%", "100%25", id="percent"),
    ],
)
def test_unsafe_room_characters_are_percent_encoded(room: str, encoded: str) -> None:
    key = recording_key("/trtc", room, "anchor_1", STARTED, "mp4")
    assert key.split("/") == ["trtc", encoded, f"anchor_1_{STAMP}.mp4"]
    assert unquote(encoded) == room


@pytest.mark.parametrize(
    "room",
    [
        "live room",
        "a|b",
        "a?b",
        "a/b",
        "a/../b",
        "../x",
        "..",
        ".",
    ],
)
def test_room_is_one_safe_segment(room: str) -> None:
    # '.' and '..' are valid StrRoomIds (TRTC allows '.'), so the key must not let them move up.
    segments = recording_key("/trtc", room, "anchor_1", STARTED, "mp4").split("/")
    assert len(segments) == 3
    assert segments[0] == "trtc"
    assert segments[1] not in (".", "..", "")
    assert unquote(segments[1]) == room


def test_different_rooms_never_share_a_folder() -> None:
    rooms = ["a b", "a%20b", "a/b", "a%2Fb", "a|b"]
    folders = {recording_key("/", room, "u", STARTED, "mp3").split("/")[0] for room in rooms}
    assert len(folders) == len(rooms)


# --- LocalStorage ---------------------------------------------------------------------


def test_store_copies_the_file_and_returns_its_url(tmp_path: Path) -> None:
    source = source_file(tmp_path)
    root = tmp_path / "store"
    url = LocalStorage(root).store(source, "trtc/1234/anchor_1.mp3")
    assert url.startswith("file:///")
    stored = path_of(url)
    assert stored.exists()
    assert stored == (root / "trtc" / "1234" / "anchor_1.mp3").resolve()
    assert stored.read_bytes() == b"ID3 recording bytes"
    # A copy: the local recording is still there, unchanged.
    assert source.read_bytes() == b"ID3 recording bytes"


def test_store_url_of_percent_encoded_key_points_to_the_file(tmp_path: Path) -> None:
    source = source_file(tmp_path)
    key = recording_key("/", "live room|1", "anchor_1", STARTED, "mp3")
    stored = path_of(LocalStorage(tmp_path / "store").store(source, key))
    assert stored.read_bytes() == source.read_bytes()
    assert stored.parent.name == "live%20room%7C1"


def test_store_never_overwrites(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    source = source_file(tmp_path, b"first")
    first = storage.store(source, "room/anchor.mp4")
    source.write_bytes(b"second")
    second = storage.store(source, "room/anchor.mp4")
    assert first != second
    assert path_of(first) != path_of(second)
    assert path_of(first).read_bytes() == b"first"
    assert path_of(second).read_bytes() == b"second"


def test_store_leaves_no_partial_files(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(root)
    source = source_file(tmp_path)
    for _ in range(3):
        storage.store(source, "room/anchor.mp4")
    assert list(root.rglob("*.part")) == []
    assert len(list((root / "room").iterdir())) == 3


@pytest.mark.parametrize(
    "key", ["../x.mp4", "room/../../x.mp4", "/x.mp4"], ids=["parent", "parent-inside", "absolute"]
)
def test_key_leaving_the_root_is_refused(tmp_path: Path, key: str) -> None:
    source = source_file(tmp_path)
    root = tmp_path / "store"
    with pytest.raises(StorageError, match="inside the storage folder"):
        LocalStorage(root).store(source, key)
    assert not (tmp_path / "x.mp4").exists()
    assert not Path("/x.mp4").exists()


@pytest.mark.parametrize("key", ["", ".", "room/.."], ids=["empty", "dot", "room-dotdot"])
def test_key_naming_the_root_itself_is_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "store"
    root.mkdir()
    source = source_file(tmp_path)
    try:
        with pytest.raises(StorageError):
            LocalStorage(root).store(source, key)
    finally:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "work"]


@pytest.mark.parametrize(
    ("root_below_blocker", "key"),
    [(False, "x.mp4"), (False, "room/x.mp4"), (True, "x.mp4")],
    ids=["root-is-a-file", "root-is-a-file-nested-key", "root-below-a-file"],
)
def test_root_that_cannot_be_created_raises_a_readable_error(
    tmp_path: Path, root_below_blocker: bool, key: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    root = blocker / "store" if root_below_blocker else blocker
    source = source_file(tmp_path)
    with pytest.raises(StorageError) as info:
        LocalStorage(root).store(source, key)
    message = str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.strerror
    assert message.startswith(cause.strerror)
    assert str(blocker) in message
    assert "Errno" not in message
    assert blocker.read_text() == "not a folder"
    assert source.read_bytes() == b"ID3 recording bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "work"]


def test_a_live_file_is_written_in_the_storage_folder_and_named_when_finished(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    live = storage.open_live("room/anchor.mp4", tmp_path)
    Path(live.output).write_bytes(b"recorded live")
    target = tmp_path / "store" / "room" / "anchor.mp4"
    assert not target.exists()  # nothing under the final name until it is whole
    url = live.finish()
    assert path_of(url) == target.resolve() and target.read_bytes() == b"recorded live"
    assert sorted(p.name for p in target.parent.iterdir()) == ["anchor.mp4"]  # no partial left


def test_a_live_file_never_overwrites_and_abort_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    first = storage.store(source_file(tmp_path, b"first"), "room/anchor.mp4")
    live = storage.open_live("room/anchor.mp4", tmp_path)
    Path(live.output).write_bytes(b"second")
    second = live.finish()
    assert path_of(first).read_bytes() == b"first" and path_of(second).name == "anchor-1.mp4"
    abandoned = storage.open_live("room/other.mp4", tmp_path)
    abandoned.abort()
    assert sorted(p.name for p in path_of(first).parent.iterdir()) == ["anchor-1.mp4", "anchor.mp4"]
