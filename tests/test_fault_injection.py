"""Fault injection: a real kill -9 in the middle of a write (index, train, ANNEAL's re-embedded store)
and a full disk leave the last good state; resuming gives the identical result; nothing is lost."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import small_world

from textitsr.index.store import Store

TRAIN = dict(source="synthetic", fusion="gff:before+after+diff", epochs=3, batch_size=8, device="cpu")


def run_until_killed(script: str) -> None:
    """Run `script` in a fresh interpreter; it must die by SIGKILL (exit -9), as `kill -9` would."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == -9, done.stderr[-3000:]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_kill_9_while_a_shard_is_written_then_resume_gives_the_same_store(tiny_archive, tmp_path) -> None:
    out = tmp_path / "store"
    run_until_killed(f"""
        import os, signal
        import numpy as np
        from textitsr.data.registry import open_source
        from textitsr.index.build import build_store

        real, calls = np.save, [0]
        def dying_save(path, arr, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:  # the second shard's pair embeddings, half written
                open(path, "wb").write(b"\\x93NUMPY half")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, arr, *args, **kwargs)
        np.save = dying_save
        build_store({str(tiny_archive.checkpoint)!r}, open_source({str(tiny_archive.world)!r}, "synthetic"),
                    {str(out)!r}, shard_size=16, batch_size=16, progress=False)
    """)
    killed = Store.open(out)
    assert len(killed) == 16 and len(killed.shard_names) == 1  # the first shard, committed and whole
    killed.validate()

    from textitsr.data.registry import open_source
    from textitsr.index.build import build_store

    resumed = build_store(
        tiny_archive.checkpoint,
        open_source(tiny_archive.world, "synthetic"),
        out,
        shard_size=16,
        batch_size=16,
        progress=False,
    )  # the kill released the lock
    clean = Store.open(tiny_archive.store)
    assert resumed.shard_names == clean.shard_names
    np.testing.assert_array_equal(resumed.pair_embeddings(), clean.pair_embeddings())
    assert resumed.metadata()["pair_id"].tolist() == clean.metadata()["pair_id"].tolist()
    assert [p for p in listing(out) if "/." in p or p.startswith(".")] == []  # temp folders replaced


def test_kill_9_during_training_then_resume_gives_the_same_checkpoint(tiny_archive, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from textitsr.training.train import TrainConfig, load_training_state, train

    out, cache = tmp_path / "model", tiny_archive.world.parent / "cache"
    run_until_killed(f"""
        import os, signal
        import textitsr.atomic as atomic
        import textitsr.training.train as t

        real, calls = t._save_last, [0]
        def dying_save_last(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 2:  # epoch 2's resumable state: killed at the swap, its temp folder written
                atomic.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        t._save_last = dying_save_last
        t.train(t.TrainConfig(root={str(tiny_archive.world)!r}, out={str(out)!r}, cache_dir={str(cache)!r},
                              progress=False, **{TRAIN!r}))
    """)
    assert load_training_state(out)["state"]["epoch"] == 1  # epoch 1's state survived whole

    result = train(
        TrainConfig(root=tiny_archive.world, out=out, cache_dir=cache, progress=False, resume=True, **TRAIN)
    )
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    resumed = load_file(str(out / "model.safetensors"))
    clean = load_file(str(tiny_archive.checkpoint / "model.safetensors"))  # the same run, never killed
    assert resumed.keys() == clean.keys()
    for name, value in clean.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-4, atol=1e-5)


def test_kill_9_while_anneal_writes_its_store_keeps_the_previous_one(tiny_archive, tmp_path) -> None:
    base = Store.open(tiny_archive.store)
    emb = base.pair_embeddings()
    card = dict(base.manifest["model"], checkpoint_id="tuned-1")
    out = tmp_path / "ws" / "store"
    first = base.with_embeddings(out, emb, checkpoint=tiny_archive.checkpoint, model=card)
    before = {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()}

    rolled = np.roll(emb, 1, axis=1)  # a "re-embedded" archive: other, still unit-norm vectors
    np.save(tmp_path / "rolled.npy", rolled)
    run_until_killed(f"""
        import os, shutil, signal
        import numpy as np
        from textitsr.index.store import Store

        real, calls = shutil.copytree, [0]
        def dying_copytree(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 2:  # the second shard of the new copy
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        shutil.copytree = dying_copytree
        base = Store.open({str(tiny_archive.store)!r})
        card = dict(base.manifest["model"], checkpoint_id="tuned-2")
        base.with_embeddings({str(out)!r}, np.load({str(tmp_path / "rolled.npy")!r}),
                             checkpoint={str(tiny_archive.checkpoint)!r}, model=card)
    """)
    assert {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()} == before
    assert Store.open(out).checkpoint_id == first.checkpoint_id == "tuned-1"

    again = base.with_embeddings(
        out, rolled, checkpoint=tiny_archive.checkpoint, model=dict(card, checkpoint_id="tuned-2")
    )  # the rerun finishes it
    np.testing.assert_allclose(again.pair_embeddings(), rolled.astype(base.manifest["dtype"]), rtol=0, atol=0)
    assert again.checkpoint_id == "tuned-2"
    assert sorted(p.name for p in out.parent.iterdir() if p.name != ".store.lock") == ["store"]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_appending_keeps_the_store_as_it_was(
    tiny_archive, tmp_path, monkeypatch, capsys
) -> None:
    from conftest import cli_main

    store = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store)
    manifest = (store / "manifest.json").read_text()
    files = listing(store)
    extra = tmp_path / "extra"
    small_world(extra, seed=11, n_train=4, n_val=2, n_test=2)
    monkeypatch.setattr("textitsr.index.shards.np.save", no_space)
    code, err = cli_main(
        monkeypatch,
        capsys,
        "index",
        "--checkpoint",
        tiny_archive.checkpoint,
        "--root",
        extra,
        "--source",
        "synthetic",
        "--out",
        store,
    )
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert code == 1 and lines and "No space left on device" in lines[-1] and "Traceback" not in err
    assert (store / "manifest.json").read_text() == manifest
    assert listing(store) == files  # no half shard, no temp folder
    Store.open(store).validate()


def test_disk_full_while_committing_keeps_the_previous_manifest(tmp_path, monkeypatch) -> None:
    from test_store import make_shard, new_store

    store = new_store(tmp_path / "s")
    store.add_shard("a-00000", make_shard("a", 2))
    manifest = (tmp_path / "s/manifest.json").read_text()
    monkeypatch.setattr("textitsr.index.store.atomic_write_text", no_space)
    with pytest.raises(OSError, match="No space left"):
        store.add_shard("b-00000", make_shard("b", 2))
    monkeypatch.undo()
    assert (tmp_path / "s/manifest.json").read_text() == manifest
    assert Store.open(tmp_path / "s").shard_names == ["a-00000"]
    assert json.loads(manifest)["n_pairs"] == 2


def test_disk_full_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch) -> None:
    from textitsr.models.checkpoint import load_checkpoint, save_checkpoint
    from textitsr.models.textitsr import ModelConfig, TextITSR

    folder = save_checkpoint(TextITSR(ModelConfig(fusion="gff:before+after+diff")), tmp_path / "ckpt")
    before = {p: (folder / p).read_bytes() for p in listing(folder)}
    monkeypatch.setattr("textitsr.models.checkpoint.save_file", no_space)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(TextITSR(ModelConfig(fusion="gff:after+diff")), folder)
    monkeypatch.undo()
    assert {p: (folder / p).read_bytes() for p in listing(folder)} == before
    assert listing(tmp_path) == ["ckpt", *(f"ckpt/{p}" for p in before)]  # no temp folder left
    load_checkpoint(folder)
