"""The on-disk backbone feature cache: contents, equivalence with the model, reuse and rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_world, tiny_model_config

import textitsr.embedding.cache as features
from textitsr.embedding.cache import EmptySplitError, build_or_load


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory.mktemp("feat") / "world", n_train=6, n_val=3, n_test=5)


@pytest.fixture(scope="module")
def model(tiny_hf_models):
    from textitsr.models.textitsr import TextITSR

    torch.manual_seed(0)
    return TextITSR(tiny_model_config(tiny_hf_models, fusion="tff", fusion_width=32, fusion_layers=1))


def _source(world: Path):
    from textitsr.data.world import SyntheticSource

    return SyntheticSource(world)


def test_cache_holds_what_the_model_computes(world: Path, model, tmp_path: Path) -> None:
    source = _source(world)
    cache = build_or_load(model, source, "test", tmp_path, progress=False)
    pairs = list(source.pairs("test"))
    d = model.dims()
    assert cache.pair_ids == [p.pair_id for p in pairs]
    assert cache.before_global.shape == (5, d["image_dim"]) and cache.before_global.dtype == np.float32
    assert cache.before_tokens.shape == (5, d["num_tokens"], d["image_dim"])
    assert cache.before_tokens.dtype == np.float16 and isinstance(cache.before_tokens, np.memmap)
    assert cache.text_features_all.shape == (len(cache.texts), d["text_dim"])
    assert len(set(cache.texts)) == len(cache.texts)  # duplicates encoded once
    for i, p in enumerate(pairs):
        assert cache.captions(i) == [" ".join(c.split()) for c in p.captions]
    assert cache.changed.tolist() == [int(p.changed) for p in pairs]
    assert cache.change_type == [p.change_type for p in pairs]

    before = np.stack([p.rgb("before") for p in pairs])
    after = np.stack([p.rgb("after") for p in pairs])
    direct = model.backbone_pair_features(before, after, tokens=True)
    got = cache.pair_features(np.array([3, 0, 4]), tokens=True)  # any order, float32 tensors
    torch.testing.assert_close(got.after_global, direct.after_global[[3, 0, 4]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.before_tokens, direct.before_tokens[[3, 0, 4]], rtol=1e-2, atol=1e-2)

    # Embedding through the cache is what encode_pairs / encode_texts give (float16 tokens aside).
    from textitsr.evaluation.evaluate import embed_cache

    pair_emb, text_emb = embed_cache(model, cache)
    np.testing.assert_allclose(pair_emb, model.encode_pairs(before, after).numpy(), atol=2e-2)
    np.testing.assert_allclose(text_emb, model.encode_texts(cache.texts).numpy(), atol=1e-5)


def test_cache_is_reused_and_rebuilt_when_stale(world: Path, model, tmp_path: Path, monkeypatch) -> None:
    source = _source(world)
    first = build_or_load(model, source, "val", tmp_path, tokens=False, progress=False)
    assert not first.with_tokens
    built = []
    real = features._write_cache
    monkeypatch.setattr(features, "_write_cache", lambda *a, **k: (built.append(a[2]), real(*a, **k)))

    # Same source, same backbones, no tokens needed: reused, nothing computed.
    again = build_or_load(model, source, "val", tmp_path, tokens=False, progress=False)
    assert built == [] and again.folder == first.folder
    # A model that needs tokens: rebuilt with them, in the same folder.
    with_tokens = build_or_load(model, source, "val", tmp_path, tokens=True, progress=False)
    assert built == ["val"] and with_tokens.with_tokens and with_tokens.folder == first.folder
    # ... and that cache serves a globals-only request as it is.
    build_or_load(model, source, "val", tmp_path, tokens=False, progress=False)
    assert built == ["val"]
    # The source changes on disk (a file rewritten): the fingerprint differs, the cache is rebuilt.
    manifest = world / "world.json"
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    build_or_load(model, source, "val", tmp_path, tokens=False, progress=False)
    assert built == ["val", "val"]
    # Another split is another cache.
    other = build_or_load(model, source, "train", tmp_path, tokens=False, progress=False)
    assert other.folder != first.folder and other.n_pairs == 6
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        [first.folder.name, other.folder.name]
    )


def test_empty_split_and_reopen(model, tmp_path: Path) -> None:
    from textitsr.data.pairs import PairSourceBase

    class Empty(PairSourceBase):
        name = "empty"

        def __len__(self) -> int:
            return 0

        def pairs(self, split=None):
            return iter(())

    with pytest.raises(EmptySplitError, match="no pairs in split 'val'"):
        build_or_load(model, Empty(), "val", tmp_path, progress=False)
    assert not [p for p in tmp_path.rglob("*.npy")]  # nothing half-written is left behind


def test_streamed_npy_is_a_plain_memory_mappable_array(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(7, 3, 4)).astype(np.float16)
    writer = features._NpyWriter(tmp_path / "x.npy", np.float16, (3, 4))
    writer.append(rows[:5])
    writer.append(rows[5:])
    writer.close()
    back = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert back.shape == (7, 3, 4) and back.dtype == np.float16
    np.testing.assert_array_equal(back, rows)


def test_a_dataset_inside_the_cache_folder_is_still_fingerprinted(world: Path, tmp_path: Path) -> None:
    """Derived pairs and augmented views live in the cache folder: a change to them must show."""
    import shutil

    from textitsr.data.world import SyntheticSource

    inside = tmp_path / "cache" / "derived"
    shutil.copytree(world, inside)
    source = SyntheticSource(inside)
    before = source.fingerprint("val", exclude=tmp_path / "cache")
    manifest = inside / "world.json"
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert source.fingerprint("val", exclude=tmp_path / "cache") != before
    # a cache kept inside a dataset is still left out of the dataset's fingerprint
    outside = SyntheticSource(world)
    kept = outside.fingerprint("val", exclude=world / "cache")
    (world / "cache").mkdir(exist_ok=True)
    (world / "cache" / "meta.json").write_text("{}")
    assert outside.fingerprint("val", exclude=world / "cache") == kept
    shutil.rmtree(world / "cache")
