"""Large-archive read path: the service memory-maps float16 pair embeddings instead of loading float32,
answers as the loading path does, and still refuses corrupt rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_store import DIM, make_shard, new_store

from textitsr.errors import StoreError
from textitsr.index.search import SearchConfig
from textitsr.service import SearchService

#: 900 pairs get the re-ranking PQ tier; re-scoring every candidate makes it exact, as the flat tier.
#: (No archive is small enough to be read into memory: the memory-mapped path is the one tested.)
RERANK = SearchConfig(scan_threshold=100, codes_threshold=500, rerank=1000, train_size=900,
                      rerank_in_memory_bytes=0)


class FixedTextModel:
    """Stands in for the text side: maps a query to a fixed unit vector derived from its words."""

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        out = []
        for t in texts:
            v = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return torch.from_numpy(np.stack(out))


def _store(root: Path, shards: int = 3, per_shard: int = 300):
    store = new_store(root)
    for k in range(shards):
        store.add_shard(f"s-{k:05d}", make_shard(f"p{k}", per_shard, seed=k))
    return store


def test_memory_mapped_service_answers_as_the_loading_one(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    mapped = SearchService(FixedTextModel(), store, Path("/m"), RERANK)
    loaded = SearchService(FixedTextModel(), store, Path("/m"), SearchConfig())
    assert mapped._pairs.kind == "codes" and loaded._pairs.kind == "flat"
    vectors = mapped._pairs.vectors
    assert isinstance(vectors, np.memmap) and vectors.dtype == np.float16
    assert Path(vectors.filename).parent == store.root / "index"
    for query in ("a road was built", "houses demolished near the river", "no change"):
        a, b = mapped.search_text(query, k=10), loaded.search_text(query, k=10)
        assert [h.pair_id for h in a] == [h.pair_id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    by_id = mapped.search_pair("p1_7", k=5)
    assert [h.pair_id for h in by_id] == [h.pair_id for h in loaded.search_pair("p1_7", k=5)]
    assert "p1_7" not in {h.pair_id for h in by_id}
    assert mapped.match_calibration() == loaded.match_calibration()
    # Reopened, the consolidated file is reused, not rewritten.
    mtime = Path(vectors.filename).stat().st_mtime_ns
    again = SearchService(FixedTextModel(), store, Path("/m"), RERANK)
    assert Path(again._pairs.vectors.filename).stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("value", "message"), [(np.nan, "not finite"), (3.0, "L2 norm")])
def test_corrupt_rows_are_refused_on_the_memory_mapped_path(
    tmp_path: Path, value: float, message: str
) -> None:
    store = _store(tmp_path / "s")
    path = store.root / "shards" / "s-00001" / "pair_embeddings.npy"
    emb = np.load(path)
    emb[123] = emb[123] * value if np.isfinite(value) else value
    np.save(path, emb)
    with pytest.raises(StoreError, match=rf"s-00001/pair_embeddings.npy: embedding row 123 .*{message}"):
        SearchService(FixedTextModel(), store, Path("/m"), RERANK)


def test_one_shard_is_mapped_in_place_and_validation_keeps_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path / "s", shards=1, per_shard=600)
    store.validate()
    assert store._embeddings is None  # checked a block at a time, not loaded
    vectors = store.pair_vectors()
    assert isinstance(vectors, np.memmap)
    assert Path(vectors.filename) == store.root / "shards" / "s-00000" / "pair_embeddings.npy"
    np.testing.assert_array_equal(np.asarray(vectors, np.float32), store.pair_embeddings())


def test_small_archives_are_re_ranked_from_memory_with_the_same_answers(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    mapped = SearchService(FixedTextModel(), store, Path("/m"), RERANK)
    config = replace(RERANK, rerank_in_memory_bytes=1 << 20)
    in_memory = SearchService(FixedTextModel(), store, Path("/m"), config)
    vectors = in_memory._pairs.vectors
    assert not isinstance(vectors, np.memmap) and vectors.dtype == np.float16 and vectors.shape == (900, DIM)
    assert isinstance(mapped._pairs.vectors, np.memmap)
    for query in ("a road was built", "no change"):
        a, b = in_memory.search_text(query, k=10), mapped.search_text(query, k=10)
        assert [h.pair_id for h in a] == [h.pair_id for h in b]
        # FAISS re-scores in-memory candidates in C++: the same float16 dot products, rounded alike
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)
    # A query-time setting: one cache key (the in-memory codes, coarser, get a file of their own).
    assert in_memory._cache_path(store, "pairs") == mapped._cache_path(store, "pairs")
