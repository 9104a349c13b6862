"""Top-k inner-product search over L2-normalised embeddings (FAISS), with metadata filters.

Three tiers, by archive size (measured by benchmarks/search.py on 2 cores):
- below `scan_threshold`: an exact `IndexFlatIP`;
- up to `hnsw_threshold`: an exhaustive scan over float16 codes (`IndexScalarQuantizer`, QT_fp16).
  Stores keep float16 embeddings, so this is exact for what is stored, reads half the bytes of
  float32, builds in about a second and answers a query over 1M pairs in about 20 ms. It also stays
  exact for text queries, which lie away from the pair embeddings (the modality gap) and are where
  graph indexes lose recall;
- above: an HNSW graph (`IndexHNSWFlat`, inner-product metric), about a millisecond a query.
A single query (or a few) runs FAISS on `query_threads` threads: splitting one scan over both cores
costs more in OpenMP hand-over, and in spinning threads fighting the text encoder's, than it saves.
Filters (bbox / dates / source) become a boolean mask over rows. A selective mask is answered by an
exact scan of just the selected rows (always correct, and cheap because the subset is small); a
broad one goes through FAISS with an `IDSelectorBitmap`, so filtered results are still the top-k of
the *selected* rows, never "top-k then drop".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from textitsr.atomic import atomic_path
from textitsr.data.pairs import Bounds
from textitsr.errors import InputError


@dataclass(frozen=True)
class SearchConfig:
    """Index choice and HNSW parameters (defaults measured by benchmarks/search.py)."""

    #: Archives with at least this many vectors are scanned over float16 codes instead of float32.
    scan_threshold: int = 50_000
    #: Archives with at least this many vectors get an HNSW graph instead of a scan.
    hnsw_threshold: int = 5_000_000
    hnsw_m: int = 32
    ef_construction: int = 64
    #: 512 keeps recall@10 >= 0.95 even on isotropic random 256-d vectors (the hardest case).
    ef_search: int = 512
    #: A filter selecting at most this many rows is answered by an exact scan of those rows.
    exact_subset_max: int = 20_000
    #: Query batches up to `small_batch` rows search on this many FAISS threads.
    query_threads: int = 1
    small_batch: int = 8


@dataclass(frozen=True)
class Filters:
    """Metadata constraints: footprint intersects `bbox` (lon/lat W,S,E,N); the pair's dates lie in
    [date_from, date_to] (ISO, either end optional); source among `sources`."""

    bbox: Bounds | None = None
    date_from: str | None = None
    date_to: str | None = None
    sources: tuple[str, ...] | None = None

    def is_empty(self) -> bool:
        return self.bbox is None and self.date_from is None and self.date_to is None and self.sources is None


def _date(value: str | None, field: str) -> np.datetime64 | None:
    if value is None or value == "":
        return None
    try:
        return np.datetime64(str(value), "D")
    except ValueError as err:
        raise InputError(f"filter {field}={value!r}: expected an ISO date such as 2018-06-30") from err


class FilterMasks:
    """Columns needed to evaluate `Filters` as vectorised masks, pre-computed once per store."""

    def __init__(self, metadata: pd.DataFrame) -> None:
        self.n = len(metadata)

        def col(name: str) -> np.ndarray:
            return pd.to_numeric(metadata[name], errors="coerce").to_numpy(np.float64, na_value=np.nan)

        self.west, self.south, self.east, self.north = (col(c) for c in ("west", "south", "east", "north"))

        def dates(name: str) -> np.ndarray:
            return pd.to_datetime(metadata[name], errors="coerce").to_numpy("datetime64[D]")

        self.date_before = dates("date_before")
        self.date_after = dates("date_after")
        # A pair with one known date counts that date for both ends.
        self.date_before = np.where(np.isnat(self.date_before), self.date_after, self.date_before)
        self.date_after = np.where(np.isnat(self.date_after), self.date_before, self.date_after)
        self.source = metadata["source"].astype(str).to_numpy()

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Boolean row mask, or None when nothing is filtered."""
        if filters is None or filters.is_empty():
            return None
        keep = np.ones(self.n, dtype=bool)
        if filters.bbox is not None:
            try:
                w, s, e, n = (float(v) for v in filters.bbox)
            except (TypeError, ValueError) as err:
                raise InputError(
                    f"filter bbox={filters.bbox!r}: expected (west, south, east, north)"
                ) from err
            if not (w <= e and s <= n):
                raise InputError(f"filter bbox={filters.bbox!r}: expected west <= east and south <= north")
            if not (-180 <= w and e <= 180 and -90 <= s and n <= 90):  # also refuses NaN
                raise InputError(
                    f"filter bbox={filters.bbox!r}: expected longitudes in [-180, 180] and latitudes in "
                    "[-90, 90] (degrees)"
                )
            with np.errstate(invalid="ignore"):
                keep &= (self.west <= e) & (self.east >= w) & (self.south <= n) & (self.north >= s)
        lo, hi = _date(filters.date_from, "date_from"), _date(filters.date_to, "date_to")
        if lo is not None and hi is not None and lo > hi:
            raise InputError(
                f"filter dates: date_from {filters.date_from} is after date_to {filters.date_to}"
            )
        if lo is not None:
            keep &= ~np.isnat(self.date_before) & (self.date_before >= lo)
        if hi is not None:
            keep &= ~np.isnat(self.date_after) & (self.date_after <= hi)
        if filters.sources is not None:
            names = filters.sources
            if isinstance(names, str | bytes) or not all(isinstance(v, str) for v in names):
                raise InputError(  # a string would be split into letters and match nothing
                    f"filter sources={filters.sources!r}: expected a list of source names, e.g. ['levircc']"
                )
            keep &= np.isin(self.source, list(filters.sources))
        return keep


class VectorIndex:
    """FAISS index over the rows of an (N, d) float32 matrix of L2-normalised vectors; built once."""

    def __init__(
        self, vectors: np.ndarray, config: SearchConfig | None = None, cache: Path | None = None
    ) -> None:
        """Build the index, or (HNSW only) load it from `cache` when that file holds this exact graph.

        Building HNSW over a million vectors takes minutes, so a store keeps it beside its shards;
        the caller picks a `cache` name that changes whenever the vectors do.
        """
        self.config = config or SearchConfig()
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = self.vectors.shape
        if n >= self.config.hnsw_threshold:
            self.kind = "hnsw"
        else:
            self.kind = "scan" if n >= self.config.scan_threshold else "flat"
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(d)
            if n:
                self.index.add(self.vectors)
            return
        if self.kind == "scan":
            fp16 = faiss.ScalarQuantizer.QT_fp16
            self.index = faiss.IndexScalarQuantizer(d, fp16, faiss.METRIC_INNER_PRODUCT)
            self.index.add(self.vectors)
            return
        index = _read_index(cache, n, d) if cache is not None else None
        if index is None:
            index = faiss.IndexHNSWFlat(d, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.ef_construction
            index.add(self.vectors)
            if cache is not None:
                with atomic_path(cache) as tmp:
                    faiss.write_index(index, str(tmp))
        index.hnsw.efSearch = self.config.ef_search
        self.index = index

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: (scores (Q, k'), row ids (Q, k')), k' = min(k, #candidates), best first."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if k <= 0:
            raise InputError(f"k={k}: expected a positive number of results")
        n_cand = len(self) if mask is None else int(mask.sum())
        k = min(k, n_cand)
        if k == 0:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        if mask is not None and (n_cand <= self.config.exact_subset_max or self.kind == "flat"):
            return self._exact_subset(q, k, np.flatnonzero(mask))
        params = None
        if mask is not None:
            sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
            if self.kind == "hnsw":
                # The graph walk must get past unselected nodes: widen the beam as selectivity drops.
                frac = n_cand / len(self)
                ef = int(min(2048, max(self.config.ef_search, k) / max(frac, 1e-3)))
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(ef, k))
            else:
                params = faiss.SearchParameters(sel=sel)
        elif self.kind == "hnsw" and k > self.config.ef_search:
            params = faiss.SearchParametersHNSW(efSearch=k)
        threads = self.config.query_threads if q.shape[0] <= self.config.small_batch else None
        with _faiss_threads(threads):
            scores, ids = self.index.search(q, k, params=params)
        return _drop_missing(scores, ids)

    def _exact_subset(self, q: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = q @ self.vectors[rows].T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        return np.take_along_axis(top_s, order, axis=1), rows[np.take_along_axis(top, order, axis=1)]


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Run the block with FAISS on `threads` OpenMP threads (None: unchanged), then restore."""
    if threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _read_index(path: Path, n: int, d: int) -> faiss.Index | None:
    """A cached index when it is readable and has the expected shape; None means rebuild."""
    if not path.is_file():
        return None
    try:
        index = faiss.read_index(str(path))
    except RuntimeError:
        return None
    if index.ntotal != n or index.d != d or not hasattr(index, "hnsw"):
        return None
    return index


def _drop_missing(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS pads with id -1 when fewer than k results were found; trim columns that are all padding."""
    valid = (ids >= 0).all(axis=0)
    keep = ids.shape[1] if valid.all() else int(np.argmin(valid))
    return scores[:, :keep], ids[:, :keep].astype(np.int64)
