"""Exact search of a store spread over Dask workers: each worker memory-maps its shards and returns
its own top-k; the client merges them into the archive's top-k.

For archives too large for one machine's memory or time budget. Workers need the store folder at
the same path (a shared file system, as for distributed builds). Each shard is always sent to the
same worker, so its pages stay in that worker's page cache from one query to the next, and the scores
are the exact inner products of the stored (float16) vectors: the same ids and scores a local exact
search returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from textitsr.errors import InputError, StoreError
from textitsr.index.store import SHARDS, Store

#: Rows scored per matrix product on a worker (bounds its memory to chunk x queries floats).
CHUNK_ROWS = 262_144

#: Shard files opened by this worker process, kept memory-mapped between queries.
_OPEN: dict[str, np.ndarray] = {}


def _mapped(path: str, rows: int, dim: int) -> np.ndarray:
    arr = _OPEN.get(path)
    if arr is None:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StoreError(
                f"{path}: unreadable on this worker ({err}); is the store on a shared file system?"
            ) from err
        if arr.shape != (rows, dim):
            raise StoreError(f"{path}: shape {arr.shape}, expected ({rows}, {dim})")
        _OPEN[path] = arr
    return arr


def top_k_of_parts(
    parts: list[tuple[str, int, int, np.ndarray | None]], queries: np.ndarray, k: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over some shards (runs on a worker).

    parts: (embedding file, global row of its first vector, rows, row mask or None) per shard.
    Returns (scores, global row ids), each (Q, <= k), best first.
    """
    q = np.asarray(queries, dtype=np.float32)
    best_s = np.zeros((len(q), 0), np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for path, offset, rows, mask in parts:
        emb = _mapped(path, rows, dim)
        for start in range(0, rows, CHUNK_ROWS):
            stop = min(rows, start + CHUNK_ROWS)
            local = np.arange(start, stop) if mask is None else start + np.flatnonzero(mask[start:stop])
            if not len(local):
                continue
            sims = q @ np.asarray(emb[local], dtype=np.float32).T
            best_s, best_i = merge_top_k(
                [(best_s, best_i), (sims, np.broadcast_to(offset + local, sims.shape))], k
            )
    return best_s, best_i


def merge_top_k(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, id) columns of several (Q, *) results; ties go to the lower id."""
    scores = np.concatenate([s for s, _ in results], axis=1)
    ids = np.concatenate([i for _, i in results], axis=1).astype(np.int64)
    order = np.lexsort((ids, -scores), axis=1)[:, :k] if scores.shape[1] else ids[:, :0]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


class ShardedIndex:
    """The `VectorIndex` interface (search, vectors, len) over a store searched by Dask workers."""

    kind = "dask"

    def __init__(self, store: Store, scheduler: Any) -> None:
        from distributed import Client

        self.store = store
        self.client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        self._owns_client = self.client is not scheduler
        self.dim = store.embed_dim
        self.parts: list[tuple[str, int, int]] = []
        offset = 0
        for shard in store.manifest["shards"]:
            n = int(shard["n_pairs"])
            path = Path(store.root).resolve() / SHARDS / shard["name"] / "pair_embeddings.npy"
            self.parts.append((str(path), offset, n))
            offset += n
        self.n = offset
        workers = sorted(self.client.scheduler_info()["workers"])
        if not workers:
            raise StoreError(f"Dask scheduler {self.client.scheduler.address}: no workers to search on")
        # Greedy balance by rows: biggest shards first, each to the least loaded worker.
        load = dict.fromkeys(workers, 0)
        self.assignment: dict[str, list[int]] = {w: [] for w in workers}
        for i in sorted(range(len(self.parts)), key=lambda i: -self.parts[i][2]):
            worker = min(load, key=load.__getitem__)
            self.assignment[worker].append(i)
            load[worker] += self.parts[i][2]
        self._vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def vectors(self) -> np.ndarray:
        """All vectors, read on the client (only pair -> pair by id and ANNEAL need them)."""
        if self._vectors is None:
            self._vectors = self.store.pair_embeddings()
        return self._vectors

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: (scores (Q, k'), row ids (Q, k')), k' = min(k, #candidates), best first."""
        if k <= 0:
            raise InputError(f"k={k}: expected a positive number of results")
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        futures = []
        for worker, indices in self.assignment.items():
            parts = []
            for i in indices:
                path, offset, n = self.parts[i]
                part_mask = None if mask is None else mask[offset : offset + n]
                if part_mask is None or part_mask.any():
                    parts.append((path, offset, n, part_mask))
            if parts:
                futures.append(
                    self.client.submit(top_k_of_parts, parts, q, k, self.dim, workers=[worker], pure=False)
                )
        if not futures:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return merge_top_k(self.client.gather(futures), k)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
