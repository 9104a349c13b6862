"""Crash-safe writes: success replaces, a failure anywhere leaves the previous content and no temp
files; `atomic_dir(keep=...)` carries named entries of the old folder into the new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import textitsr.atomic as atomic
from textitsr.atomic import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text


@pytest.fixture(autouse=True)
def any_folder_is_ours(monkeypatch) -> None:
    """These tests exercise the swap itself on plain folders; which folders may be replaced at all is
    `textitsr.outputs`' rule, tested in test_outputs.py."""
    monkeypatch.setattr(atomic, "recognise", lambda folder: "test folder")


class Boom(Exception):
    pass


def listing(folder: Path) -> list[str]:
    """Every entry under `folder` (relative, sorted), hidden temp names included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def make_dir(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def read_dir(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ files


def test_write_creates_parents_and_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "note.txt"
    atomic_write_text(dest, "first ✓")
    assert dest.read_text(encoding="utf-8") == "first ✓"
    atomic_write_bytes(dest, b"\x00second")
    assert dest.read_bytes() == b"\x00second"
    assert listing(tmp_path / "a" / "b") == ["note.txt"]


def test_atomic_path_yields_a_sibling_temp_that_becomes_dest(tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"old")
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        tmp.write_bytes(b"new")
        assert dest.read_bytes() == b"old"  # nothing visible until the block succeeds
    assert dest.read_bytes() == b"new" and listing(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_failure_in_atomic_path_keeps_old_file_and_leaves_no_temp(tmp_path: Path, error) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"old")
    with pytest.raises(error), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert dest.read_bytes() == b"old" and listing(tmp_path) == ["data.bin"]
    # Without a previous file nothing appears at all.
    with pytest.raises(Boom), atomic_path(tmp_path / "fresh.bin") as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert listing(tmp_path) == ["data.bin"]


def test_failing_atomic_write_keeps_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "note.txt"
    atomic_write_text(dest, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(dest, "\ud800")  # a lone surrogate cannot be encoded
    assert dest.read_text() == "old" and listing(tmp_path) == ["note.txt"]


# ---------------------------------------------------------------------------------------- folders


def test_atomic_dir_replaces_the_whole_folder(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt"
    with atomic_dir(dest) as tmp:
        make_dir(tmp, {"a.txt": "1", "sub/b.txt": "2"})
        assert not dest.exists()
    assert read_dir(dest) == {"a.txt": "1", "sub/b.txt": "2"}
    with atomic_dir(dest) as tmp:
        make_dir(tmp, {"c.txt": "3"})
        assert read_dir(dest) == {"a.txt": "1", "sub/b.txt": "2"}  # old one in place until the swap
    assert read_dir(dest) == {"c.txt": "3"}  # old entries are gone, not merged
    assert listing(tmp_path) == ["ckpt", "ckpt/c.txt"]  # no temp or old folder left beside it


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_failure_in_atomic_dir_keeps_old_folder(tmp_path: Path, error) -> None:
    dest = tmp_path / "ckpt"
    make_dir(dest, {"a.txt": "1", "last/state.json": "{}"})
    with pytest.raises(error), atomic_dir(dest, keep=["last"]) as tmp:
        make_dir(tmp, {"a.txt": "half"})
        raise error
    assert read_dir(dest) == {"a.txt": "1", "last/state.json": "{}"}
    assert listing(tmp_path) == ["ckpt", "ckpt/a.txt", "ckpt/last", "ckpt/last/state.json"]


def test_keep_carries_named_entries_into_the_new_folder(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt"
    make_dir(
        dest, {"model.bin": "old", "stale.txt": "x", "last/state.json": "{1}", "last/deep/t": "t", "n": "n"}
    )
    with atomic_dir(dest, keep=["last", "n", "absent"]) as tmp:
        make_dir(tmp, {"model.bin": "new"})
    assert read_dir(dest) == {"model.bin": "new", "last/state.json": "{1}", "last/deep/t": "t", "n": "n"}
    assert listing(tmp_path) == sorted(
        [
            "ckpt",
            "ckpt/model.bin",
            "ckpt/last",
            "ckpt/last/state.json",
            "ckpt/last/deep",
            "ckpt/last/deep/t",
            "ckpt/n",
        ]
    )
    # The block's own entry of a kept name wins over the old one.
    with atomic_dir(dest, keep=["last"]) as tmp:
        make_dir(tmp, {"model.bin": "newer", "last/state.json": "{2}"})
    assert read_dir(dest) == {"model.bin": "newer", "last/state.json": "{2}"}


def test_keep_without_an_old_folder(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "fresh", keep=["last"]) as tmp:
        make_dir(tmp, {"a": "1"})
    assert read_dir(tmp_path / "fresh") == {"a": "1"}


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_keep_rejects_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain names"), atomic_dir(tmp_path / "d", keep=[name]):
        pass
    assert listing(tmp_path) == []


def test_failure_while_carrying_kept_entries_keeps_old_folder(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "ckpt"
    make_dir(dest, {"model.bin": "old", "last/a": "a", "last/b": "b"})
    calls = {"n": 0}
    real = atomic._link_or_copy

    def failing(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(atomic, "_link_or_copy", failing)
    with pytest.raises(OSError, match="disk full"), atomic_dir(dest, keep=["last"]) as tmp:
        make_dir(tmp, {"model.bin": "new"})
    assert read_dir(dest) == {"model.bin": "old", "last/a": "a", "last/b": "b"}
    assert listing(tmp_path) == ["ckpt", "ckpt/last", "ckpt/last/a", "ckpt/last/b", "ckpt/model.bin"]


def test_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "ckpt"
    make_dir(dest, {"model.bin": "old", "last/a": "a"})
    real = os.replace

    def failing(src, dst):
        if Path(src).name.endswith(".tmp") and Path(dst) == dest:
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError, match="rename failed"), atomic_dir(dest, keep=["last"]) as tmp:
        make_dir(tmp, {"model.bin": "new"})
    assert read_dir(dest) == {"model.bin": "old", "last/a": "a"}
    assert listing(tmp_path) == ["ckpt", "ckpt/last", "ckpt/last/a", "ckpt/model.bin"]


def test_process_killed_before_the_swap_keeps_old_folder_whole(tmp_path: Path) -> None:
    """A hard exit (no `finally`) after the kept entries were carried over: they were linked, not
    moved, so the old folder still has them; only stray hidden temp folders are left behind."""
    import subprocess
    import sys

    dest = tmp_path / "ckpt"
    make_dir(dest, {"model.bin": "old", "last/state.json": "{1}"})
    script = (
        "import os, sys, pathlib, textitsr.atomic as a\n"
        "a.recognise = lambda folder: 'test folder'\n"
        "a.os.replace = lambda *args: os._exit(9)\n"
        "with a.atomic_dir(sys.argv[1], keep=['last']) as tmp:\n"
        "    (pathlib.Path(tmp) / 'model.bin').write_text('new')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(dest)], check=False)
    assert done.returncode == 9
    assert read_dir(dest) == {"model.bin": "old", "last/state.json": "{1}"}
    strays = [p for p in tmp_path.iterdir() if p.name != "ckpt"]
    assert all(p.name.startswith(".ckpt.") for p in strays)
    assert sorted(read_dir(p).get("last/state.json", "") for p in strays)[-1] == "{1}"  # the temp copy


def test_written_files_and_folders_get_the_usual_permissions(tmp_path: Path) -> None:
    """Stores/checkpoints are shared with other users and Dask workers: not mkstemp's 0600/0700."""
    from textitsr.atomic import DIR_MODE, FILE_MODE

    atomic_write_text(tmp_path / "manifest.json", "{}")
    with atomic_dir(tmp_path / "store") as folder:
        (folder / "x").write_text("1")
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == FILE_MODE
    assert (tmp_path / "store").stat().st_mode & 0o777 == DIR_MODE
