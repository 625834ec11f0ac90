"""WatchFolder: exactly once, waits for files being written, moves failures aside, survives restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ingest.watch import STATE_FILE_NAME, WatchFolder


class FakeClock:
    """Monotonic seconds the test advances by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _watch(root: Path, clock: FakeClock, settle_seconds: float = 5.0, **kwargs) -> WatchFolder:
    return WatchFolder(root, settle_seconds=settle_seconds, clock=clock, **kwargs)


def _write(path: Path, data: bytes = b"\x00video" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_each_file_is_offered_exactly_once(tmp_path, clock):
    a = _write(tmp_path / "room1" / "a.mp4")
    b = _write(tmp_path / "b.MKV")  # patterns are case-insensitive
    _write(tmp_path / "notes.txt")
    _write(tmp_path / ".hidden.mp4")
    watch = _watch(tmp_path, clock)
    assert watch.scan() == []  # first sighting: not settled yet
    clock.advance(5.0)
    assert watch.scan() == sorted([a, b])
    assert watch.scan() == []  # claimed, not offered twice
    watch.mark_done(a)
    watch.mark_done(b)
    clock.advance(60.0)
    assert watch.scan() == []


def test_file_still_being_written_is_waited_for(tmp_path, clock):
    path = _write(tmp_path / "growing.mp4", b"x" * 100)
    watch = _watch(tmp_path, clock)
    assert watch.scan() == []
    for step in range(4):  # the camera appends every 3 s: the file never settles
        clock.advance(3.0)
        with path.open("ab") as fh:
            fh.write(b"y" * 100)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000 * (step + 1)))
        assert watch.scan() == []
    clock.advance(4.0)
    assert watch.scan() == []  # 4 s unchanged < 5 s
    clock.advance(1.0)
    assert watch.scan() == [path]


def test_restart_does_not_offer_done_files_again(tmp_path, clock):
    done = _write(tmp_path / "done.mp4")
    offered = _write(tmp_path / "offered.mp4")
    watch = _watch(tmp_path, clock)
    watch.scan()
    clock.advance(5.0)
    assert watch.scan() == [done, offered]
    watch.mark_done(done)  # "offered" was claimed, but the server died before handing it over

    state = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert list(state["done"]) == ["done.mp4"]

    restarted = _watch(tmp_path, clock)
    restarted.scan()
    clock.advance(5.0)
    assert restarted.scan() == [offered]  # offered again: it was never handed over


def test_replaced_file_is_new(tmp_path, clock):
    path = _write(tmp_path / "latest.mp4", b"a" * 10)
    watch = _watch(tmp_path, clock, settle_seconds=0.0)
    assert watch.scan() == [path]
    watch.mark_done(path)
    assert watch.scan() == []
    _write(path, b"b" * 20)  # a new recording under the same name
    assert watch.scan() == [path]


def test_failed_file_is_moved_aside_with_its_reason(tmp_path, clock):
    bad = _write(tmp_path / "cam2" / "broken.mp4")
    watch = _watch(tmp_path, clock, settle_seconds=0.0)
    assert watch.scan() == [bad]
    moved = watch.mark_failed(bad, "not a video file: broken.mp4 looks like text")
    assert moved == tmp_path / "failed" / "cam2" / "broken.mp4"
    assert moved.exists() and not bad.exists()
    reason = moved.with_name("broken.mp4.reason.txt").read_text()
    assert "looks like text" in reason
    assert watch.scan() == []  # the failed folder is not watched

    # the same name failing again does not overwrite the first failure
    again = _write(tmp_path / "cam2" / "broken.mp4", b"other")
    assert watch.scan() == [again]
    second = watch.mark_failed(again, "still broken")
    assert second == tmp_path / "failed" / "cam2" / "broken.1.mp4"
    assert (tmp_path / "failed" / "cam2" / "broken.1.mp4.reason.txt").exists()
    assert watch.mark_failed(tmp_path / "cam2" / "gone.mp4", "x") is None


def test_custom_failed_dir_state_path_and_patterns(tmp_path, clock):
    inbox, failed, state = tmp_path / "inbox", tmp_path / "rejected", tmp_path / "var" / "watch.json"
    inbox.mkdir()
    ts = _write(inbox / "a.ts")
    _write(inbox / "b.mp4")
    _write(inbox / "sub" / "c.ts")
    watch = WatchFolder(
        inbox, settle_seconds=0, patterns=("*.ts",), failed_dir=failed, state_path=state, recursive=False, clock=clock
    )
    assert watch.scan() == [ts]
    watch.mark_done(ts)
    assert state.exists() and not (inbox / STATE_FILE_NAME).exists()
    moved = watch.mark_failed(inbox / "b.mp4", "unsupported codec")
    assert moved is not None and moved.parent == failed


def test_symlinks_are_ignored_and_paths_must_be_inside(tmp_path, clock):
    outside = _write(tmp_path / "outside" / "secret.mp4")
    root = tmp_path / "watch"
    root.mkdir()
    (root / "link.mp4").symlink_to(outside)
    watch = _watch(root, clock, settle_seconds=0.0)
    assert watch.scan() == []
    with pytest.raises(ValueError):
        watch.mark_done(outside)


def test_damaged_state_file_does_not_stop_the_watch(tmp_path, clock):
    (tmp_path / STATE_FILE_NAME).write_text("{not json")
    path = _write(tmp_path / "a.mp4")
    watch = _watch(tmp_path, clock, settle_seconds=0.0)
    assert watch.scan() == [path]
    watch.mark_done(path)
    assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["done"]["a.mp4"]["size"] == path.stat().st_size


def test_state_forgets_deleted_files(tmp_path, clock):
    path = _write(tmp_path / "a.mp4")
    watch = _watch(tmp_path, clock, settle_seconds=0.0)
    watch.scan()
    watch.mark_done(path)
    path.unlink()
    watch.scan()
    assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["done"] == {}


def test_missing_root_is_refused(tmp_path):
    with pytest.raises(NotADirectoryError):
        WatchFolder(tmp_path / "nope")
