"""Workspace: the on-disk journal of one recording run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from recorder.workspace import CLOSED_FILE, TAKE_FILE, Take, Workspace

T0 = datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)


def _take(anchor: str, started_at: datetime = T0) -> Take:
    return Take(anchor=anchor, started_at=started_at, stream_url=f"rtmp://127.0.0.1/live/{anchor}")


def _part_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "run-1")


def test_add_writes_take_json_in_the_take_folder(workspace: Workspace) -> None:
    take = _take("alice")

    folder = workspace.add(take)

    assert folder == workspace.root / "alice_20240517T083015123456Z"
    assert folder == workspace.folder(take)
    written = json.loads((folder / TAKE_FILE).read_text())
    assert written["anchor"] == "alice"
    assert written["stream_url"] == "rtmp://127.0.0.1/live/alice"
    assert Take.model_validate_json((folder / TAKE_FILE).read_text()) == take


def test_takes_is_empty_for_a_new_run(workspace: Workspace) -> None:
    assert workspace.takes() == []


def test_takes_are_sorted_by_start_then_anchor(workspace: Workspace) -> None:
    late = _take("aaron", T0 + timedelta(seconds=5))
    early_bob = _take("bob", T0)
    early_al = _take("al", T0)
    middle = _take("zed", T0 + timedelta(seconds=1))
    for take in (late, early_bob, middle, early_al):
        workspace.add(take)

    assert workspace.takes() == [early_al, early_bob, middle, late]


def test_add_is_idempotent_for_the_same_take(workspace: Workspace) -> None:
    take = _take("alice")

    workspace.add(take)
    workspace.add(take)

    assert workspace.takes() == [take]


def test_take_name_is_anchor_and_utc_stamp() -> None:
    take = _take("alice")

    assert take.name == "alice_20240517T083015123456Z"


def test_take_name_is_in_utc_whatever_the_offset() -> None:
    shanghai = timezone(timedelta(hours=8))
    take = _take("alice", T0.astimezone(shanghai))

    assert take.name == "alice_20240517T083015123456Z"


def test_two_takes_of_one_anchor_have_different_names(workspace: Workspace) -> None:
    first = _take("alice", T0)
    again = _take("alice", T0 + timedelta(milliseconds=1))

    assert first.name != again.name
    workspace.add(first)
    workspace.add(again)
    assert workspace.takes() == [first, again]
    assert workspace.folder(first) != workspace.folder(again)


def test_closed_reason_is_none_before_close(workspace: Workspace) -> None:
    assert workspace.closed_reason() is None
    workspace.add(_take("alice"))
    assert workspace.closed_reason() is None


def test_close_round_trips_the_reason(workspace: Workspace) -> None:
    reason = 'no anchor in the room for 30 s — "quoted"'

    workspace.close(reason)

    assert workspace.closed_reason() == reason
    assert (workspace.root / CLOSED_FILE).is_file()


def test_close_again_replaces_the_reason(workspace: Workspace) -> None:
    workspace.close("the room was dismissed")
    workspace.close("the recorder was removed from the room")

    assert workspace.closed_reason() == "the recorder was removed from the room"


def test_closed_file_is_not_taken_for_a_take(workspace: Workspace) -> None:
    take = _take("alice")
    workspace.add(take)
    workspace.close("the room was dismissed")

    assert workspace.takes() == [take]


def test_discard_removes_only_that_take_folder(workspace: Workspace) -> None:
    kept = _take("alice")
    gone = _take("bob", T0 + timedelta(seconds=1))
    workspace.add(kept)
    folder = workspace.add(gone)
    (folder / "capture.ts").write_bytes(b"\x47" * 188)

    workspace.discard(gone)

    assert not folder.exists()
    assert workspace.folder(kept).is_dir()
    assert workspace.takes() == [kept]


def test_discard_of_a_missing_take_is_harmless(workspace: Workspace) -> None:
    workspace.discard(_take("nobody"))

    assert workspace.takes() == []


def test_discard_if_done_keeps_a_run_with_takes_left(workspace: Workspace) -> None:
    take = _take("alice")
    workspace.add(take)
    workspace.close("the room was dismissed")

    assert workspace.discard_if_done() is False
    assert workspace.root.is_dir()
    assert workspace.takes() == [take]
    assert workspace.closed_reason() == "the room was dismissed"


def test_discard_if_done_removes_the_run_once_every_take_is_gone(workspace: Workspace) -> None:
    first = _take("alice")
    second = _take("bob", T0 + timedelta(seconds=2))
    workspace.add(first)
    workspace.add(second)
    workspace.close("the room was dismissed")

    workspace.discard(first)
    assert workspace.discard_if_done() is False
    assert workspace.root.is_dir()

    workspace.discard(second)
    assert workspace.discard_if_done() is True
    assert not workspace.root.exists()
    assert workspace.closed_reason() is None


def test_discard_if_done_leaves_sibling_runs_alone(tmp_path: Path) -> None:
    mine = Workspace(tmp_path / "run-1")
    other = Workspace(tmp_path / "run-2")
    mine.close("the room was dismissed")
    other.add(_take("alice"))

    assert mine.discard_if_done() is True

    assert not mine.root.exists()
    assert other.takes() == [_take("alice")]


def test_no_part_files_are_left_behind(workspace: Workspace) -> None:
    workspace.add(_take("alice"))
    workspace.add(_take("bob", T0 + timedelta(seconds=1)))
    workspace.close("the room was dismissed")

    assert _part_files(workspace.root) == []
    names = sorted(p.name for p in workspace.root.rglob("*") if p.is_file())
    assert names == [CLOSED_FILE, TAKE_FILE, TAKE_FILE]
