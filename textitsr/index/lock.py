"""One writer per store: a lock file beside the store folder, held by builds and re-embedded copies.

Two `textitsr index` runs appending to one store used to keep only one run's shards. The lock lives
beside the folder (`.<name>.lock`), not inside it, so it also guards a store that is written into a
temporary folder and swapped into place. A second writer waits up to `WRITER_WAIT_S`, then fails
with StoreLockedError; readers never take it (they see the manifest before or after a commit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from textitsr.errors import StoreLockedError

#: Seconds a second writer waits for a store's lock before giving up with StoreLockedError.
WRITER_WAIT_S = 600.0


def lock_path(root: Path) -> Path:
    """The writer lock file of the store at `root`: beside it, never inside the folder it guards."""
    root = Path(root).absolute()
    return root.parent / f".{root.name}.lock"


@contextlib.contextmanager
def writer_lock(root: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the store's writer lock for the block (builds, appends, re-embedded copies)."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    wait = WRITER_WAIT_S if timeout is None else timeout
    lock = FileLock(path, timeout=wait)
    try:
        lock.acquire()
    except Timeout as err:
        raise StoreLockedError(
            f"{root}: another process is writing this store (lock {path} still held after {wait:g} s); "
            "run again when it has finished"
        ) from err
    try:
        yield
    finally:
        lock.release()
