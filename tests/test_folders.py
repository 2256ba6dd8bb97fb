"""Folders made for a command's outputs are removed again when it fails (specgan.folders)."""

from __future__ import annotations

import pytest

from specgan.errors import SpecganError
from specgan.folders import made_parent, outermost_missing, remove_made


def test_a_failed_write_removes_the_folders_made_for_it_and_keeps_those_that_existed(tmp_path):
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "deeper" / "out.png"
    with pytest.raises(RuntimeError, match="boom"):
        with made_parent(target) as folder:
            assert folder == target.parent and folder.is_dir()
            raise RuntimeError("boom")
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_a_folder_that_holds_something_is_kept_after_a_failure(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.png"
    with pytest.raises(KeyboardInterrupt):
        with made_parent(target):
            (tmp_path / "new" / "other.txt").write_text("written meanwhile")
            raise KeyboardInterrupt
    assert not (tmp_path / "new" / "deeper").exists()  # empty: removed
    assert (tmp_path / "new" / "other.txt").read_text() == "written meanwhile"


def test_a_successful_block_keeps_its_folders_even_empty(tmp_path):
    with made_parent(tmp_path / "a" / "b" / "out.wav"):
        pass
    assert (tmp_path / "a" / "b").is_dir()


def test_a_file_in_the_way_is_a_one_line_error_naming_the_output(tmp_path):
    (tmp_path / "afile").write_text("in the way")
    target = tmp_path / "afile" / "sub" / "x.png"
    with pytest.raises(SpecganError) as raised:
        with made_parent(target):
            pass
    assert str(raised.value) == f"{target}: cannot create its folder ({tmp_path / 'afile'} is a file)"


def test_remove_made_stops_at_the_outermost_folder_made(tmp_path):
    made = outermost_missing(tmp_path / "x" / "y" / "z")
    assert made == tmp_path / "x"
    (tmp_path / "x" / "y" / "z").mkdir(parents=True)
    remove_made(tmp_path / "x" / "y" / "z", made=made)
    assert not (tmp_path / "x").exists() and tmp_path.is_dir()
    (tmp_path / "p" / "q").mkdir(parents=True)
    remove_made(tmp_path / "p" / "q", made=None)  # nothing was made: nothing removed
    assert (tmp_path / "p" / "q").is_dir()


def test_a_folder_gone_or_unreadable_meanwhile_keeps_the_original_error(tmp_path, monkeypatch):
    """Another command can remove the new folder (or make it unreadable) before it is looked into: the OSError of
    that look had replaced the error being reported."""
    from pathlib import Path

    def gone(self):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(Path, "iterdir", gone)
    with pytest.raises(RuntimeError, match="the real error"):
        with made_parent(tmp_path / "new" / "out.png"):
            raise RuntimeError("the real error")
    assert (tmp_path / "new").is_dir()


def test_an_empty_folder_that_existed_before_is_kept_after_a_failure(tmp_path):
    (tmp_path / "mine").mkdir()
    assert outermost_missing(tmp_path / "mine") is None
    with pytest.raises(RuntimeError):
        with made_parent(tmp_path / "mine" / "out.png"):
            raise RuntimeError("boom")
    assert (tmp_path / "mine").is_dir()


def test_remove_made_never_climbs_above_a_folder_outside_made(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    remove_made(tmp_path / "a" / "b", made=tmp_path / "elsewhere")
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a").is_dir()


# -- FolderLock (specgan.folder_lock) ----------------------------------------------------------------------------
def test_a_locked_folder_refuses_a_second_writer_until_the_first_is_done(tmp_path):
    from specgan.errors import DatasetError
    from specgan.folder_lock import FolderLock

    with FolderLock(tmp_path, error=DatasetError, busy="in use"):
        with pytest.raises(DatasetError, match=f"^{tmp_path}: in use$"):
            with FolderLock(tmp_path, error=DatasetError, busy="in use"):
                pass
    with FolderLock(tmp_path, error=DatasetError, busy="in use"):  # free again
        pass
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # a success keeps its lock file


def test_a_failure_removes_only_a_lock_file_it_made_in_a_folder_holding_nothing_else(tmp_path):
    from specgan.errors import DatasetError
    from specgan.folder_lock import FolderLock
    from specgan.folders import outermost_missing

    def fail(folder, made=None):
        with pytest.raises(RuntimeError):
            with FolderLock(folder, error=DatasetError, busy="in use", made=made):
                raise RuntimeError("boom")

    new = tmp_path / "new" / "run"
    made = outermost_missing(new)
    new.mkdir(parents=True)
    with FolderLock(new, error=DatasetError, busy="in use", made=made):  # a success keeps even an empty new folder
        pass
    assert (new / ".lock").exists()
    fail(new, made)  # the lock file was there before this command: kept, and so the folders
    assert [p.name for p in new.iterdir()] == [".lock"]
    (new / ".lock").unlink()
    fail(new, made)
    assert not (tmp_path / "new").exists()  # made for it, and empty: removed, parents too
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "data.txt").write_text("the user's")
    fail(tmp_path / "held")
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == [".lock", "data.txt"]
