"""A build embeds each distinct image once: same store as without the cache, fewer backbone runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from textitsr.embedding.image_cache import ImageFeatureCache, cached_pair_features, image_key
from textitsr.index.build import BuildConfig, build_store

SERIES = Path(__file__).resolve().parent.parent / "data" / "real-scenes" / "naip"


def test_cache_keeps_copies_within_its_byte_budget() -> None:
    cache = ImageFeatureCache(max_bytes=3 * 4 * 8)  # three 8-float globals
    batch = torch.arange(40, dtype=torch.float32).reshape(5, 8)
    for i in range(4):
        cache.put(bytes([i]), batch[i], None)
    assert len(cache) == 3 and cache.nbytes == 96 and cache.get(bytes([0])) is None  # oldest dropped
    cache.get(bytes([1]))  # used: now the newest
    cache.put(bytes([4]), batch[4], None)
    assert cache.get(bytes([1])) is not None and cache.get(bytes([2])) is None
    assert cache.get(bytes([4]))[0].untyped_storage().nbytes() == 32  # a copy, not a view of the batch
    cache.put(bytes([5]), torch.zeros(100), None)  # larger than the whole budget: not kept
    assert cache.get(bytes([5])) is None and cache.nbytes <= cache.max_bytes


def test_image_key_tells_pixels_and_shapes_apart() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert image_key(a) == image_key(a.copy()) != image_key(b)
    assert image_key(a) != image_key(a.reshape(4, 12, 1))
    assert image_key(a[:, ::2]) == image_key(a[:, ::2].copy())  # a strided view: its pixels, not its buffer


class _CountingModel:
    """Wraps a model and counts the images its backbone receives."""

    def __init__(self, model) -> None:
        self.model, self.images = model, 0

    def backbone_image_features(self, *batches: np.ndarray):
        self.images += sum(len(b) for b in batches)
        return self.model.backbone_image_features(*batches)


@pytest.mark.parametrize("tokens", [False, True])
def test_cached_pair_features_equal_the_backbone_on_every_image(tiny_hf_models, tokens: bool) -> None:
    from textitsr.models.textitsr import TextITSR

    model = TextITSR(tiny_model_config(tiny_hf_models)).eval()
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (32, 32, 3), np.uint8) for _ in range(4)]
    before = [scenes[0], scenes[1], scenes[2], scenes[0]]  # (0,1) (1,2) (2,3) (0,3): 4 distinct images
    after = [scenes[1], scenes[2], scenes[3], scenes[3]]
    with torch.inference_mode():
        expected = model._pair_features(np.stack(before), np.stack(after), tokens=True)
    counting, cache = _CountingModel(model), ImageFeatureCache()
    got = cached_pair_features(counting, before, after, cache, tokens=tokens)
    assert counting.images == 4 and (cache.hits, cache.misses) == (4, 4)
    torch.testing.assert_close(got.before_global, expected.before_global, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.after_global, expected.after_global, atol=1e-5, rtol=1e-5)
    if tokens:
        torch.testing.assert_close(got.after_tokens, expected.after_tokens, atol=1e-5, rtol=1e-5)
    else:
        assert got.before_tokens is None
    again = cached_pair_features(counting, after, before, cache, tokens=tokens)  # all known now
    assert counting.images == 4
    torch.testing.assert_close(again.before_global, got.after_global)


def _files(store: Path) -> dict[str, bytes]:
    files = sorted(p for p in (store / "shards").rglob("*") if p.is_file())
    return {str(p.relative_to(store)): p.read_bytes() for p in files}


def test_series_build_embeds_each_tile_date_once_with_the_same_store(tmp_path: Path, monkeypatch) -> None:
    """The shipped NAIP crop (10 dates, 2 x 2 tiles) in consecutive pairs: 36 pairs, 72 images, 40 distinct.

    The backbone's float rounding depends slightly on which images share its batch, so embeddings
    may differ in the last float16 bit (as between two uncached builds with other batch sizes);
    every other file of the store is byte for byte the same."""
    from textitsr.data.geotiff import GeoTiffSource
    from textitsr.embedding.encode import load_model
    from textitsr.models.textitsr import TextITSR
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    if not SERIES.is_dir():
        pytest.skip(f"{SERIES} not found")
    checkpoint = Path(DEFAULT_MODEL_DIR).resolve()
    runs: list[int] = []
    real = TextITSR.backbone_image_features

    def counted(self, *batches):
        runs.append(sum(len(b) for b in batches))
        return real(self, *batches)

    monkeypatch.setattr(TextITSR, "backbone_image_features", counted)
    source = GeoTiffSource(SERIES, pairing="consecutive")
    stores = {}
    for name, budget in (("uncached", 0), ("cached", BuildConfig.image_cache_bytes)):
        runs.clear()
        config = BuildConfig(batch_size=4, shard_size=6, image_cache_bytes=budget)
        stores[name] = build_store(checkpoint, source, tmp_path / name, config=config, progress=False)
        stores[name + " images"] = sum(runs)
    assert len(stores["cached"]) == len(stores["uncached"]) == 36
    assert stores["uncached images"] == 72 and stores["cached images"] == 40  # shared across shards too
    a, b = stores["cached"].pair_embeddings(), stores["uncached"].pair_embeddings()
    np.testing.assert_allclose(a, b, rtol=2**-10, atol=2**-14)  # float16: one unit in the last place
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.99999
    cached, uncached = _files(tmp_path / "cached"), _files(tmp_path / "uncached")
    assert cached.keys() == uncached.keys()
    differ = [name for name in cached if cached[name] != uncached[name]]
    assert all(name.endswith("pair_embeddings.npy") for name in differ)
    assert load_model(checkpoint).fast_image_encoder is not None  # the compiled backbone was the one cached
