"""Crash-safe writes: everything goes to a temporary name in the same folder, then is renamed.

A crash midway therefore leaves either the old file/folder or the new one, never half of either.
Only a folder textitsr wrote is ever replaced (`textitsr.outputs` recognises one); any other existing
folder is refused, so a mistyped output path cannot delete a user's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from textitsr.errors import OutputError
from textitsr.outputs import is_empty_dir, recognise

# mkstemp/mkdtemp create 0600/0700 entries; give results the mode a plain open()/mkdir() would have,
# so stores and checkpoints stay readable by the other users/workers that share them.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path beside `dest`; on success it replaces `dest` atomically."""
    dest = Path(dest)
    if dest.is_dir():
        raise OutputError(f"{dest}: is a folder; expected a file path to write")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, FILE_MODE)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # the writer may have recreated it (e.g. with mode 0600)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str], keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `dest`; on success it takes `dest`'s place.

    An existing `dest` is moved aside first and removed only after the new folder is in place.
    `keep` names entries of the old `dest` (e.g. a training state living inside a checkpoint folder)
    that carry over into the new one unless the block wrote an entry of that name itself. They are
    hard-linked (copied where links are impossible), not moved, so the old folder stays whole until
    the swap: an exception at any point leaves `dest` as it was, and a crash at any point leaves
    every kept entry in the old folder or the new one (never only in the temporary one).
    """
    dest = Path(dest)
    keep = tuple(keep)
    for name in keep:
        if name in ("", ".", "..") or Path(name).name != name:
            raise ValueError(f"atomic_dir {dest}: keep entries must be plain names, got {name!r}")
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise OutputError(f"{dest}: exists and is not a folder; refusing to replace it")
        if not is_empty_dir(dest) and recognise(dest) is None:
            raise OutputError(
                f"{dest}: exists and is not a folder textitsr wrote; refusing to replace it "
                "(choose a new or empty folder)"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        _usual_modes(tmp)
        for name in keep:
            if (dest / name).exists() and not (tmp / name).exists():
                _link_tree(dest / name, tmp / name)
        old = None
        if dest.exists():
            # A unique empty folder that `dest` is renamed over: no clash with a crashed run's leftover.
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            try:
                os.replace(dest, old)
            except OSError:
                old.rmdir()
                raise
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None:  # put the old folder back rather than leave `dest` missing
                os.replace(old, dest)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(folder: Path, name: str = "*") -> None:
    """Delete the temporary folders/files that killed writes of `name` left in `folder`.

    Only safe while holding the lock that serialises those writes (a store's writer lock): any
    `.<name>.*.tmp` / `.<name>.*.old` found then belongs to a process that no longer runs.
    """
    for pattern in (f".{name}.*.tmp", f".{name}.*.old"):
        for path in Path(folder).glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _usual_modes(folder: Path) -> None:
    """Give everything written into `folder` the mode plain open()/mkdir() would (some writers,
    e.g. safetensors, create 0600 files), so shared checkpoints and stores stay readable."""
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate `src` at `dst` sharing file contents (hard links), so nothing is copied or moved."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    link_or_copy_file(Path(src), Path(dst))


def link_or_copy_file(src: Path, dst: Path) -> bool:
    """Hard-link the regular file `src` to `dst`, or copy it where links are impossible.

    Only a regular file is shared: a symlink (which could point at /proc/self/environ or a secret),
    a FIFO or a device is skipped and False returned. The copy opens `src` without following a link
    and checks it is still a regular file, so swapping it for a link in between copies nothing.
    """
    if not stat.S_ISREG(os.lstat(src).st_mode):
        return False
    try:
        os.link(src, dst, follow_symlinks=False)
        return True
    except OSError:  # a filesystem without hard links, or another file system
        pass
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with open(dst, "wb") as target:
            shutil.copyfileobj(source, target)
    shutil.copystat(src, dst, follow_symlinks=False)
    return True
