"""Embedding a source into a store: contents, resume after a kill, incremental append, Dask equals local."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from textitsr.data.registry import open_source
from textitsr.embedding.encode import backbone_precision, load_model
from textitsr.embedding.precision import MIN_BF16_COSINE
from textitsr.index.build import BuildConfig, build_store, resolve_precision
from textitsr.index.store import Store
from textitsr.models.checkpoint import checkpoint_id


def test_store_holds_every_pair_of_the_world(tiny_archive) -> None:
    source = open_source(tiny_archive.world, "synthetic")
    store = Store.open(tiny_archive.store, checkpoint_id=checkpoint_id(tiny_archive.checkpoint))
    store.validate()
    meta = store.metadata()
    assert meta["pair_id"].tolist() == [p.pair_id for p in source.pairs()]
    assert len(store.shard_names) == 3  # 40 pairs in shards of 16
    assert store.manifest["model"]["fusion"] == "gff:before+after+diff"
    assert store.manifest["checkpoint"] == str(tiny_archive.checkpoint.resolve())
    emb = store.pair_embeddings()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    # Stored vectors are the model's own embeddings of those pairs (float16 on disk), at the
    # precision the build chose on this machine ("auto": bf16 where the CPU has it natively).
    model = load_model(tiny_archive.checkpoint)
    precision = resolve_precision(model, source, None, BuildConfig()).precision
    pairs = list(source.pairs("val"))[:3]
    with backbone_precision(model, precision):
        expected = model.encode_pairs(
            np.stack([p.rgb("before") for p in pairs]), np.stack([p.rgb("after") for p in pairs])
        ).numpy()
    rows = [int(np.flatnonzero(meta["pair_id"] == p.pair_id)[0]) for p in pairs]
    np.testing.assert_allclose(emb[rows], expected, atol=3e-3 if precision == "fp32" else 2e-2)
    assert ((emb[rows] * expected).sum(axis=1) > (0.9999 if precision == "fp32" else MIN_BF16_COSINE)).all()
    assert len(store.captions()) == 5 * len(meta)
    assert meta["change_stats"].notna().all()  # synthetic imagery has NIR: spectral stats recorded


def test_killed_build_resumes_with_only_missing_shards(tiny_archive, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store_dir)
    manifest = json.loads((store_dir / "manifest.json").read_text())
    last = manifest["shards"].pop()  # the build died after writing shard 3 but before committing it
    for key in ("n_pairs", "n_captions"):  # the manifest it had committed before that shard
        manifest[key] -= last[key]
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    kept = {
        s["name"]: (store_dir / "shards" / s["name"] / "pair_embeddings.npy").stat().st_mtime_ns
        for s in manifest["shards"]
    }

    seen: list[float] = []
    store = build_store(
        tiny_archive.checkpoint,
        open_source(tiny_archive.world, "synthetic"),
        store_dir,
        shard_size=16,
        batch_size=16,
        progress=lambda f, msg: seen.append(f),
    )
    assert store.shard_names[-1] == last["name"] and len(store) == 40
    assert seen[-1] == 1.0 and len(seen) == 1  # one batch: only the missing shard's 8 pairs
    for name, stamp in kept.items():
        assert (store_dir / "shards" / name / "pair_embeddings.npy").stat().st_mtime_ns == stamp
    original = Store.open(tiny_archive.store)
    np.testing.assert_array_equal(store.pair_embeddings(), original.pair_embeddings())


def test_appending_a_source_adds_shards_without_touching_the_rest(tiny_archive, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store_dir)
    before = Store.open(store_dir)
    old_emb = before.pair_embeddings().copy()
    levircc = open_source(tiny_archive.world / "levircc", "levircc")  # same tiles, LEVIR-CC ids
    store = build_store(
        tiny_archive.checkpoint, levircc, store_dir, split="test", shard_size=16, progress=False
    )
    assert len(store) == 48 and len(store.shard_names) == 4
    meta = store.metadata()
    assert (meta["source"] == "levircc").sum() == 8
    np.testing.assert_array_equal(store.pair_embeddings()[meta["source"] == "synthetic"], old_emb)


@pytest.mark.slow
def test_dask_build_equals_local_build(tiny_archive, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    source = open_source(tiny_archive.world, "synthetic")
    local = build_store(
        tiny_archive.checkpoint, source, tmp_path / "local", split="test", shard_size=4, progress=False
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = build_store(
            tiny_archive.checkpoint,
            source,
            tmp_path / "dask",
            split="test",
            shard_size=4,
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert remote.shard_names == local.shard_names and len(remote.shard_names) == 2
    assert remote.metadata()["pair_id"].tolist() == local.metadata()["pair_id"].tolist()
    np.testing.assert_allclose(remote.pair_embeddings(), local.pair_embeddings(), atol=2e-3)
    np.testing.assert_allclose(remote.caption_embeddings(), local.caption_embeddings(), atol=2e-3)
    assert remote.manifest["checkpoint_id"] == local.manifest["checkpoint_id"]
