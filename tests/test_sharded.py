"""Search across a Dask cluster: 2 workers return the same ids and scores as a local exact search."""

from __future__ import annotations

import numpy as np
import pytest

from textitsr.index.search import SearchConfig, VectorIndex
from textitsr.index.sharded import ShardedIndex, merge_top_k
from textitsr.index.store import Store
from textitsr.service import SearchFilters, SearchService

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield client


def test_merge_top_k_keeps_the_best_and_breaks_ties_by_id() -> None:
    a = (np.array([[0.9, 0.5]], np.float32), np.array([[7, 3]]))
    b = (np.array([[0.5, 0.8, 0.1]], np.float32), np.array([[1, 4, 9]]))
    scores, ids = merge_top_k([a, b], 3)
    assert ids.tolist() == [[7, 4, 1]] and scores[0].tolist() == pytest.approx([0.9, 0.8, 0.5])


def test_two_workers_return_the_local_exact_top_k(tiny_archive, cluster) -> None:
    store = Store.open(tiny_archive.store)
    assert len(store.shard_names) >= 3  # several shards to spread over the workers
    sharded = ShardedIndex(store, cluster)
    assigned = sorted(i for idx in sharded.assignment.values() for i in idx)
    assert assigned == list(range(len(store.shard_names)))
    assert all(sharded.assignment.values())  # both workers hold shards
    local = VectorIndex(store.pair_embeddings(), SearchConfig())
    q = np.random.default_rng(0).standard_normal((5, store.embed_dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for k in (1, 10, 1_000):
        s_local, i_local = local.search(q, k)
        s_dask, i_dask = sharded.search(q, k)
        np.testing.assert_array_equal(i_dask, i_local)
        np.testing.assert_allclose(s_dask, s_local, atol=1e-6)
    mask = np.zeros(len(store), bool)
    mask[::3] = True
    np.testing.assert_array_equal(sharded.search(q, 5, mask)[1], local.search(q, 5, mask)[1])
    assert sharded.search(q, 5, np.zeros(len(store), bool))[1].shape == (5, 0)


def test_service_on_a_cluster_answers_like_the_local_service(tiny_archive, cluster) -> None:
    local = SearchService.open(tiny_archive.store)
    remote = SearchService.open(tiny_archive.store, scheduler=cluster)
    assert remote.catalog.stats().model["index"] == "dask"
    for query in ("new buildings along the road", "the pond dries up"):
        want, got = local.search_text(query, k=8), remote.search_text(query, k=8)
        assert [h.pair_id for h in got] == [h.pair_id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    bbox = local.catalog.pair("test_000003")["bounds"]
    got = remote.search_text("road", k=40, filters=SearchFilters(bbox=bbox))
    expected = local.search_text("road", 40, SearchFilters(bbox=bbox))
    assert [h.pair_id for h in got] == [h.pair_id for h in expected]
    assert [h.pair_id for h in remote.search_pair("test_000003", k=5)] == [
        h.pair_id for h in local.search_pair("test_000003", k=5)
    ]
