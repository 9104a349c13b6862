"""FAISS search: exact below the threshold, HNSW above with recall checked, filters always correct."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textitsr.errors import InputError
from textitsr.index.search import FilterMasks, Filters, SearchConfig, VectorIndex


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    rows = np.arange(len(x)) if rows is None else rows
    sims = q @ x[rows].T
    return rows[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


@pytest.fixture(scope="module")
def hnsw_case() -> tuple[np.ndarray, np.ndarray, VectorIndex]:
    """20k isotropic random 256-d vectors: the hardest case for a graph index."""
    rng = np.random.default_rng(0)
    x, q = unit(rng, 20_000, 256), unit(rng, 100, 256)
    return x, q, VectorIndex(x, SearchConfig(hnsw_threshold=10_000))


def test_small_archive_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, q = unit(rng, 500, 32), unit(rng, 5, 32)
    index = VectorIndex(x)
    assert index.kind == "flat"
    scores, ids = index.search(q, 10)
    np.testing.assert_array_equal(ids, brute_force(x, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


@pytest.mark.slow
def test_hnsw_recall_at_10_against_exact(hnsw_case) -> None:
    x, q, index = hnsw_case
    assert index.kind == "hnsw"
    _, approx = index.search(q, 10)
    exact = brute_force(x, q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95, recall


def test_hnsw_with_broad_filter_only_returns_selected_rows(hnsw_case) -> None:
    x, q, index = hnsw_case
    mask = np.zeros(len(x), bool)
    mask[::2] = True  # 10k rows selected: goes through the FAISS IDSelector path
    cfg = SearchConfig(hnsw_threshold=10_000, exact_subset_max=1_000)
    index = copy.copy(index)  # same graph, a lower threshold for the exact-subset shortcut
    index.config = cfg
    _, ids = index.search(q[:20], 10, mask)
    assert mask[ids].all()
    exact = brute_force(x, q[:20], 10, np.flatnonzero(mask))
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact, strict=True)])
    assert recall >= 0.9, recall


def test_selective_filter_is_exact(hnsw_case) -> None:
    x, q, index = hnsw_case
    mask = np.zeros(len(x), bool)
    mask[np.random.default_rng(2).choice(len(x), 300, replace=False)] = True
    _, ids = index.search(q[:10], 10, mask)
    np.testing.assert_array_equal(ids, brute_force(x, q[:10], 10, np.flatnonzero(mask)))


def test_flat_with_bitmap_selector_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    x, q = unit(rng, 2_000, 16), unit(rng, 3, 16)
    mask = rng.random(2_000) < 0.5
    index = VectorIndex(x, SearchConfig(exact_subset_max=0))
    _, ids = index.search(q, 7, mask)
    np.testing.assert_array_equal(ids, brute_force(x, q, 7, np.flatnonzero(mask)))


def test_k_is_clamped_and_validated() -> None:
    rng = np.random.default_rng(4)
    x, q = unit(rng, 12, 8), unit(rng, 1, 8)
    index = VectorIndex(x)
    assert index.search(q, 1_000_000)[1].shape == (1, 12)
    mask = np.zeros(12, bool)
    mask[[3, 5]] = True
    assert sorted(index.search(q, 10, mask)[1][0].tolist()) == [3, 5]
    assert index.search(q, 10, np.zeros(12, bool))[1].shape == (1, 0)
    with pytest.raises(InputError, match="k=0"):
        index.search(q, 0)
    assert VectorIndex(np.zeros((0, 8), np.float32)).search(q, 5)[1].shape == (1, 0)


def test_hnsw_graph_is_cached_and_reused(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x, q = unit(rng, 3_000, 16), unit(rng, 4, 16)
    cfg = SearchConfig(hnsw_threshold=1_000)
    cache = tmp_path / "pairs.faiss"
    first = VectorIndex(x, cfg, cache=cache)
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    second = VectorIndex(x, cfg, cache=cache)
    assert cache.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    np.testing.assert_array_equal(first.search(q, 5)[1], second.search(q, 5)[1])
    cache.write_bytes(b"garbage")  # an unreadable cache is rebuilt, not trusted
    assert VectorIndex(x, cfg, cache=cache).search(q, 5)[1].shape == (4, 5)


def metadata() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pair_id": ["a", "b", "c", "d"],
            "source": ["synthetic", "synthetic", "geotiff", "levircc"],
            "west": [0.0, 10.0, 20.0, None],
            "south": [0.0, 0.0, 0.0, None],
            "east": [1.0, 11.0, 21.0, None],
            "north": [1.0, 1.0, 1.0, None],
            "date_before": ["2016-04-18", "2012-01-01", "2018-06-01", None],
            "date_after": ["2019-05-02", "2014-01-01", None, None],
        }
    )


def test_filter_masks() -> None:
    masks = FilterMasks(metadata())
    assert masks.mask(None) is None and masks.mask(Filters()) is None
    assert masks.mask(Filters(bbox=(0.5, 0.5, 10.5, 2.0))).tolist() == [True, True, False, False]
    assert masks.mask(Filters(bbox=(1.0, 1.0, 1.0, 1.0))).tolist() == [True, False, False, False]  # touching
    assert masks.mask(Filters(date_from="2015-01-01")).tolist() == [True, False, True, False]
    assert masks.mask(Filters(date_to="2018-12-31")).tolist() == [False, True, True, False]
    assert masks.mask(Filters(date_from="2015", date_to="2020-01-01")).tolist() == [True, False, True, False]
    assert masks.mask(Filters(sources=("geotiff", "levircc"))).tolist() == [False, False, True, True]
    both = Filters(bbox=(-180, -90, 180, 90), sources=("synthetic",), date_to="2015-01-01")
    assert masks.mask(both).tolist() == [False, True, False, False]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (Filters(bbox=(5, 0, 1, 1)), "west <= east"),
        (Filters(bbox=("x", 0, 1, 1)), "west, south, east, north"),
        (Filters(date_from="yesterday"), "ISO date"),
        (Filters(date_from="2020-01-01", date_to="2019-01-01"), "after date_to"),
    ],
)
def test_bad_filters_are_input_errors(filters: Filters, message: str) -> None:
    with pytest.raises(InputError, match=message):
        FilterMasks(metadata()).mask(filters)


def test_mid_size_archive_scans_float16_codes_exactly() -> None:
    """The scan tier returns the exact top-k (up to float16 rounding), also for broad filters."""
    rng = np.random.default_rng(3)
    x, q = unit(rng, 6_000, 64), unit(rng, 20, 64)
    x = x.astype(np.float16).astype(np.float32)  # what a store keeps
    index = VectorIndex(x, SearchConfig(scan_threshold=5_000, exact_subset_max=100))
    assert index.kind == "scan"
    scores, ids = index.search(q, 10)
    np.testing.assert_array_equal(ids, brute_force(x, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), atol=1e-3)
    mask = np.zeros(len(x), bool)
    mask[1::3] = True  # 2,000 rows > exact_subset_max: the FAISS selector path
    _, ids = index.search(q, 10, mask=mask)
    assert mask[ids].all()
    np.testing.assert_array_equal(ids, brute_force(x, q, 10, rows=np.flatnonzero(mask)))


def test_single_queries_run_faiss_on_query_threads_and_restore_the_setting() -> None:
    import faiss

    rng = np.random.default_rng(4)
    index = VectorIndex(unit(rng, 1_000, 16), SearchConfig(query_threads=1))
    seen: list[int] = []
    real_search = index.index.search

    def spy(*args, **kwargs):
        seen.append(faiss.omp_get_max_threads())
        return real_search(*args, **kwargs)

    index.index.search = spy  # type: ignore[method-assign]
    before = faiss.omp_get_max_threads()
    index.search(unit(rng, 1, 16), 5)
    index.search(unit(rng, 50, 16), 5)
    assert seen == [1, before] and faiss.omp_get_max_threads() == before


def clustered(rng: np.random.Generator, n: int, d: int, gap: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Archive-like vectors around 200 centres, and text-like queries across the modality gap from them."""
    centres = rng.standard_normal((200, d)).astype(np.float32)
    offset = gap * rng.standard_normal(d).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.8 * rng.standard_normal((n, d)).astype(np.float32) + offset
    q = centres[rng.integers(0, 200, 50)] + rng.standard_normal((50, d)).astype(np.float32) - offset
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)  # what a store keeps
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


def recall_at_10(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact, strict=True)]))


@pytest.fixture(scope="module")
def codes_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """30k clustered float16 vectors in a memory-mapped .npy file, as a store shard holds them."""
    x, q = clustered(np.random.default_rng(6), 30_000, 64)
    path = tmp_path_factory.mktemp("codes") / "pair_embeddings.npy"
    np.save(path, x)
    return np.load(path, mmap_mode="r"), q


def test_codes_tier_reranks_to_the_exact_top_k(codes_case) -> None:
    x, q = codes_case
    exact = brute_force(x.astype(np.float32), q, 10)
    for in_memory, kept in ((0, np.memmap), (x.nbytes, np.ndarray)):
        config = SearchConfig(codes_threshold=10_000, rerank=1_000, rerank_in_memory_bytes=in_memory,
                              codes_dims_per_code=2)  # 64-d: 4 dimensions a code is too coarse here
        index = VectorIndex(x, config)
        # Larger than `rerank_in_memory_bytes`: kept on disk, not copied; else read in as stored.
        assert index.kind == "codes" and isinstance(index.vectors, kept) and index.vectors.dtype == np.float16
        assert (index.refine is None) == (kept is np.memmap)  # in memory: scan + re-score in FAISS
        scores, ids = index.search(q, 10)
        assert recall_at_10(ids, exact) == 1.0
        exact_scores = np.take_along_axis(q @ x.astype(np.float32).T, ids, axis=1)
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)
        assert (np.diff(scores, axis=1) <= 0).all()


def test_codes_tier_in_memory_scans_coarse_codes_and_rescores_exactly_in_faiss() -> None:
    """256-d as the default model: 4 dimensions a 4-bit code (32 bytes a vector), `codes_rerank`
    candidates re-scored by FAISS from the float16 vectors it holds (which the index also exposes)."""
    x, q = clustered(np.random.default_rng(8), 40_000, 256)
    index = VectorIndex(x, SearchConfig(codes_threshold=10_000))
    assert index.refine is not None and index.index.pq.M == 64
    assert index.vectors.dtype == np.float16 and np.array_equal(np.asarray(index.vectors), x)
    scores, ids = index.search(q, 10)
    exact = brute_force(x.astype(np.float32), q, 10)
    assert recall_at_10(ids, exact) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.astype(np.float32).T, ids, axis=1), rtol=1e-5)
    _, many = index.search(q[:3], 5_000)  # k above the re-scoring depth: still the exact order
    np.testing.assert_array_equal(many[:, :50], brute_force(x.astype(np.float32), q[:3], 50))
    keep = np.arange(len(x)) % 3 == 0  # filters take the numpy path over the same vectors
    _, ids = index.search(q[:5], 10, keep)
    assert keep[ids].all()
    assert recall_at_10(ids, brute_force(x.astype(np.float32), q[:5], 10, np.flatnonzero(keep))) == 1.0
    vectors = index.vectors
    del index
    assert np.array_equal(np.asarray(vectors[:100]), x[:100])  # the view keeps FAISS's memory alive


def test_codes_scan_split_over_threads_finds_the_same_candidates(codes_case) -> None:
    import faiss

    x, q = codes_case
    one = VectorIndex(x, SearchConfig(codes_threshold=10_000, scan_parts=1, codes_dims_per_code=2))
    two = VectorIndex(x, SearchConfig(codes_threshold=10_000, scan_parts=2, codes_dims_per_code=2))
    assert isinstance(one.index, faiss.IndexPQFastScan) and isinstance(two.index, faiss.IndexShards)
    assert two.refine is not None  # scan on two threads, then re-scored in FAISS
    assert two.index.count() == 2 and two.index.ntotal == len(x)  # 30,000: the last code block is partial
    s1, c1 = one.index.search(q, 500)
    s2, c2 = two.index.search(q, 500)
    np.testing.assert_array_equal(s1, s2)  # same quantized scores; equal scores may swap places
    assert np.mean([len(set(a) & set(b)) / 500 for a, b in zip(c1, c2, strict=True)]) >= 0.99
    exact = brute_force(x.astype(np.float32), q, 10)
    for index in (one, two):
        _, ids = index.search(q, 10)
        assert recall_at_10(ids, exact) == 1.0
    np.testing.assert_array_equal(one.search(q, 10)[1], two.search(q, 10)[1])
    keep = np.arange(len(x)) % 2 == 0
    np.testing.assert_array_equal(one.search(q[:5], 10, keep)[1], two.search(q[:5], 10, keep)[1])


def test_codes_tier_with_broad_and_narrow_filters(codes_case) -> None:
    x, q = codes_case
    index = VectorIndex(x, SearchConfig(codes_threshold=10_000, rerank=300, exact_subset_max=1_000))
    rows = np.arange(len(x))
    for keep in (rows % 2 == 0, rows % 50 == 0, rows < 3):  # 15k, 600, 3 rows selected
        _, ids = index.search(q[:10], 10, keep)
        exact = brute_force(x.astype(np.float32), q[:10], 10, np.flatnonzero(keep))
        assert keep[ids].all() and ids.shape[1] == min(10, keep.sum())
        if keep.sum() >= 10:
            assert recall_at_10(ids, exact) >= 0.99
        else:
            assert set(ids[0]) == set(np.flatnonzero(keep))


def test_ivf_tier_recall_and_cache(codes_case, tmp_path: Path) -> None:
    x, q = codes_case
    cfg = SearchConfig(ivf_threshold=10_000, nlist=64, nprobe=32, rerank=300)
    cache = tmp_path / "pairs.faiss"
    index = VectorIndex(x, cfg, cache=cache)
    assert index.kind == "ivf" and cache.is_file()
    _, ids = index.search(q, 10)
    assert recall_at_10(ids, brute_force(x.astype(np.float32), q, 10)) >= 0.95
    stamp = cache.stat().st_mtime_ns
    again = VectorIndex(x, cfg, cache=cache)
    assert cache.stat().st_mtime_ns == stamp  # loaded, not retrained
    np.testing.assert_array_equal(again.search(q, 10)[1], ids)
    keep = np.arange(len(x)) % 3 == 0
    _, ids = index.search(q[:10], 10, keep)
    assert keep[ids].all()
    assert VectorIndex(x, SearchConfig(ivf_threshold=10_000, pq_dims_per_code=4), cache=cache).kind == "ivf"


def test_pq_code_size_must_divide_the_dimension() -> None:
    x, _ = clustered(np.random.default_rng(7), 2_000, 31)
    with pytest.raises(InputError, match="pq_dims_per_code"):
        VectorIndex(x, SearchConfig(codes_threshold=1_000))
