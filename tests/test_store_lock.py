"""One writer per store: concurrent appends lose nothing, a second writer waits then fails clearly,
readers never block."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_store import make_shard, new_store

from textitsr.errors import StoreLockedError
from textitsr.index import lock as lock_mod
from textitsr.index.lock import lock_path, writer_lock
from textitsr.index.store import Store


def test_two_concurrent_index_runs_keep_every_pair(tiny_archive, tmp_path: Path) -> None:
    """Two `textitsr index` appends to one store at once: both splits end up in the manifest."""
    out = tmp_path / "store"
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "textitsr.cli",
                "index",
                "--checkpoint",
                str(tiny_archive.checkpoint),
                "--root",
                str(tiny_archive.world),
                "--source",
                "synthetic",
                "--split",
                split,
                "--out",
                str(out),
                "--shard-size",
                "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for split in ("val", "test")
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    store = Store.open(out)
    store.validate()
    meta = store.metadata()
    assert sorted(meta["split"].value_counts().items()) == [("test", 8), ("val", 8)]
    on_disk = sorted(p.name for p in (out / "shards").iterdir() if not p.name.startswith("."))
    assert on_disk == sorted(store.shard_names)  # no shard folder left out of the manifest


def test_commit_merges_what_another_writer_committed(tmp_path: Path) -> None:
    """Two Store objects on one folder (two processes): the second commit keeps the first's shards."""
    new_store(tmp_path / "s")
    first, second = Store.open(tmp_path / "s"), Store.open(tmp_path / "s")
    first.add_shard("a-00000", make_shard("a", 2))
    second.add_shard("b-00000", make_shard("b", 3))
    assert Store.open(tmp_path / "s").shard_names == ["a-00000", "b-00000"]
    assert len(Store.open(tmp_path / "s")) == 5


def test_second_writer_fails_clearly_and_readers_do_not_wait(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    store.add_shard("a-00000", make_shard("a", 2))
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with writer_lock(tmp_path / "s"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(StoreLockedError, match=r"another process is writing this store"):
            with writer_lock(tmp_path / "s", timeout=0.2):
                pass
        reader = Store.open(tmp_path / "s")  # readers take no lock
        assert len(reader.metadata()) == 2 and reader.pair_embeddings().shape == (2, 8)
    finally:
        release.set()
        thread.join()
    with writer_lock(tmp_path / "s", timeout=0.2):  # free again
        pass
    assert lock_path(tmp_path / "s") == tmp_path / ".s.lock"  # beside the store, not inside


def test_a_build_waits_for_the_lock_then_gives_up(tiny_archive, tmp_path: Path, monkeypatch) -> None:
    from textitsr.data.world import SyntheticSource
    from textitsr.index.build import build_store

    monkeypatch.setattr(lock_mod, "WRITER_WAIT_S", 0.2)
    out = tmp_path / "store"
    with writer_lock(out), pytest.raises(StoreLockedError, match=str(out)):
        build_store(tiny_archive.checkpoint, SyntheticSource(tiny_archive.world), out, progress=False)
    assert not (out / "manifest.json").exists()
