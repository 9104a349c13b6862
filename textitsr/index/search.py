"""Top-k inner-product search over L2-normalised embeddings (FAISS), with metadata filters.

Tiers, by archive size (measured by benchmarks/search.py on 2 cores):
- below `scan_threshold`: an exact `IndexFlatIP`;
- up to `codes_threshold`: an exhaustive scan over float16 codes (`IndexScalarQuantizer`, QT_fp16).
  Stores keep float16 embeddings, so this is exact for what is stored and reads half the bytes of
  float32;
- above: 4-bit product-quantizer codes scanned with FAISS fast scan, whose best candidates are
  re-scored exactly from the stored vectors. Up to `ivf_threshold` the codes are a flat array of
  `codes_dims_per_code` dimensions a code (32 bytes a 256-d vector) and the vectors sit in memory
  inside a FAISS refine index (`IndexRefine`: scan, then re-score `codes_rerank` candidates, all in
  C++); vectors too large for memory stay memory-mapped and only the candidates' rows are read
  (`rerank` of them). From `ivf_threshold` on the codes
  sit in an inverted file and a query visits `nprobe` of its lists, many of them: text queries lie
  away from the pair embeddings (the modality gap), so their neighbours spread over more lists than
  a pair's would. This is where a graph index (HNSW, still available through `hnsw_threshold`) loses
  recall on text queries.
A single query (or a few) runs FAISS on `query_threads` threads: splitting one scan over both cores
with OpenMP costs more in hand-over, and in spinning threads fighting the text encoder's, than it
saves. The flat PQ codes tier can instead split its codes into `scan_parts` contiguous slices, each
scanned by its own FAISS worker thread (`IndexShards`), whose candidates are merged before the exact
re-rank: only worth it where a second core is otherwise idle.
Filters (bbox / dates / source) become a boolean mask over rows. A selective mask is answered by an
exact scan of just the selected rows (always correct, and cheap because the subset is small); a
broad one goes through FAISS with an `IDSelectorBitmap`, so filtered results are still the top-k of
the *selected* rows, never "top-k then drop".
"""

from __future__ import annotations

import contextlib
import os
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
    """Index choice and its parameters (defaults measured by benchmarks/search.py)."""

    #: Archives with at least this many vectors are scanned over float16 codes instead of float32.
    scan_threshold: int = 50_000
    #: Archives with at least this many vectors are searched over PQ codes + exact re-ranking.
    codes_threshold: int = 500_000
    #: Vector dimensions per 4-bit product-quantizer code in the inverted file (256-d: 128 codes, 64
    #: bytes a vector).
    pq_dims_per_code: int = 2
    #: The same for the flat codes tier when its vectors fit in memory: coarser codes halve its scan;
    #: re-scoring more candidates (`codes_rerank`, in FAISS) keeps the exact top-k.
    codes_dims_per_code: int = 4
    #: Candidates from the codes re-scored exactly; the top-k among them is the answer. (FAISS fast
    #: scan switches to a much slower collector above 1,000.)
    rerank: int = 1_000
    #: Candidates the flat codes tier re-scores when its vectors are in memory (FAISS refine index).
    codes_rerank: int = 4_000
    #: Re-ranked vectors up to this many bytes are read into memory once (re-scoring candidates then
    #: costs no system call a row); larger ones stay memory-mapped and only candidates' rows are read.
    rerank_in_memory_bytes: int = 1 << 30
    #: Archives with at least this many vectors keep their PQ codes in an inverted file.
    ivf_threshold: int = 5_000_000
    #: Inverted lists (None: about sqrt(N) / 3, which keeps assigning 10^7 vectors to lists to
    #: minutes) and how many of them one query visits.
    nlist: int | None = None
    nprobe: int = 128
    #: Vectors sampled to train the quantizers.
    train_size: int = 200_000
    #: Archives with at least this many vectors get an HNSW graph (None: never; it loses recall on
    #: text queries, so it is only there to be chosen on purpose).
    hnsw_threshold: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 64
    #: 512 keeps recall@10 >= 0.95 even on isotropic random 256-d vectors (the hardest case).
    ef_search: int = 512
    #: A filter selecting at most this many rows is answered by an exact scan of those rows.
    exact_subset_max: int = 20_000
    #: Query batches up to `small_batch` rows search on this many FAISS threads.
    query_threads: int = 1
    small_batch: int = 8
    #: The flat PQ codes tier scans its codes in this many slices on as many threads (1: one scan;
    #: 2 only pays where the second core is idle, see benchmarks/results/search.md).
    scan_parts: int = 1

    def kind(self, n: int) -> str:
        """The tier an archive of n vectors gets: flat, scan, codes, ivf or hnsw."""
        if self.hnsw_threshold is not None and n >= self.hnsw_threshold:
            return "hnsw"
        if n >= self.ivf_threshold:
            return "ivf"
        if n >= self.codes_threshold:
            return "codes"
        return "scan" if n >= self.scan_threshold else "flat"

    def index_key(self) -> dict[str, object]:
        """The settings a cached index file is keyed to (query-time-only settings added later left out,
        so adding them did not invalidate indexes already on disk)."""
        return {k: v for k, v in self.__dict__.items() if k not in _QUERY_TIME_ONLY}


_QUERY_TIME_ONLY = ("rerank_in_memory_bytes", "scan_parts", "codes_rerank")


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
    """FAISS index over the rows of an (N, d) matrix of L2-normalised vectors; built once.

    `vectors` may be float16 or float32 and may be memory-mapped (`np.load(..., mmap_mode="r")`):
    the tiers that re-rank keep it as stored (read into memory up to `rerank_in_memory_bytes`, else
    left memory-mapped, reading only the rows they re-score); the others copy it into memory as
    float32.
    """

    #: Tiers slow enough to build that a store keeps them on disk (see `cache`).
    CACHED_KINDS = ("codes", "ivf", "hnsw")
    #: Tiers that keep `vectors` as given (e.g. memory-mapped float16) and re-rank from them.
    RERANK_KINDS = ("codes", "ivf")

    def __init__(
        self, vectors: np.ndarray, config: SearchConfig | None = None, cache: Path | None = None
    ) -> None:
        """Build the index, or load it from `cache` when that file holds this exact index.

        Training quantizers or a graph over millions of vectors takes minutes, so a store keeps the
        index beside its shards; the caller picks a `cache` name that changes whenever the vectors do.
        """
        self.config = config or SearchConfig()
        n, d = vectors.shape
        self.kind = self.config.kind(n)
        if self.kind in self.RERANK_KINDS:
            self.vectors = vectors
        else:
            self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
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
        if cache is not None and self._pq_codes(d) != d // self.config.pq_dims_per_code:
            cache = cache.with_name(f"{cache.stem}-pq{self._pq_codes(d)}{cache.suffix}")  # never clobbered
        index = _read_index(cache, n, d, self.kind, self._pq_codes(d)) if cache is not None else None
        if index is None:
            index = self._build(n, d)
            if cache is not None:
                with atomic_path(cache) as tmp:
                    faiss.write_index(index, str(tmp))
            if self.kind in self.RERANK_KINDS:
                self.vectors = _remap(self.vectors)  # drop the pages the build read
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.config.ef_search
        if self.kind == "codes" and self.config.scan_parts > 1:
            index = split_fast_scan(index, self.config.scan_parts)
        #: Codes + exact re-scoring in one FAISS call (flat codes tier, vectors in memory), or None.
        self.refine: faiss.IndexRefine | None = None
        if self.kind in self.RERANK_KINDS and self.vectors.nbytes <= self.config.rerank_in_memory_bytes:
            if self.kind == "codes":
                self.refine, self.vectors = _refine_index(index, self.vectors)
            else:
                self.vectors = np.array(self.vectors)
        self.index = index

    def _build(self, n: int, d: int) -> faiss.Index:
        cfg = self.config
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
            index.add(self.vectors)
            return index
        for name in ("pq_dims_per_code", "codes_dims_per_code"):
            if d % getattr(cfg, name):
                raise InputError(f"{d}-d vectors: {name}={getattr(cfg, name)} must divide the dimension")
        m = self._pq_codes(d)
        if self.kind == "codes":
            index = faiss.IndexPQFastScan(d, m, 4, faiss.METRIC_INNER_PRODUCT)
        else:
            nlist = cfg.nlist or max(1, int(np.sqrt(n) / 3))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, cfg.train_size), replace=False)
        index.train(_rows(self.vectors, np.sort(sample)))
        for start in range(0, n, 100_000):
            index.add(np.ascontiguousarray(self.vectors[start : start + 100_000], dtype=np.float32))
        return index

    def _pq_codes(self, d: int) -> int:
        """Product-quantizer codes a vector gets: coarser in the flat codes tier when its vectors fit
        in memory (FAISS then re-scores `codes_rerank` candidates cheaply), else `pq_dims_per_code`."""
        if self.kind == "codes" and self.vectors.nbytes <= self.config.rerank_in_memory_bytes:
            return d // self.config.codes_dims_per_code
        return d // self.config.pq_dims_per_code

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
        threads = self.config.query_threads if q.shape[0] <= self.config.small_batch else None
        if self.kind in ("codes", "ivf"):
            with _faiss_threads(threads):
                return self._search_codes(q, k, mask, n_cand)
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
        with _faiss_threads(threads):
            scores, ids = self.index.search(q, k, params=params)
        return _drop_missing(scores, ids)

    def _search_codes(
        self, q: np.ndarray, k: int, mask: np.ndarray | None, n_cand: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the PQ codes, re-scored exactly; the top-k of those, best first."""
        if self.refine is not None and mask is None:
            depth = min(len(self), max(self.config.codes_rerank, k))
            params = faiss.IndexRefineSearchParameters(k_factor=depth / k)
            return _drop_missing(*self.refine.search(q, k, params=params))
        depth = min(n_cand, max(self.config.rerank, k))
        if self.kind == "ivf":
            sel = None if mask is None else faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.config.nprobe)
            _, cand = self.index.search(q, depth, params=params)
        else:
            # Fast scan takes no ID selector: over-fetch by the mask's selectivity, then drop.
            fetch = depth if mask is None else min(len(self), int(depth * len(self) / n_cand) + k)
            _, cand = self.index.search(q, fetch, params=None)
        out_s = np.full((q.shape[0], k), -np.inf, np.float32)
        out_i = np.full((q.shape[0], k), -1, np.int64)
        for i in range(q.shape[0]):
            rows = np.unique(cand[i][cand[i] >= 0])
            if mask is not None:
                rows = rows[mask[rows]]
            if len(rows) < k:  # too few selected rows among the candidates: scan them all
                rows = np.flatnonzero(mask) if mask is not None else np.arange(len(self))
            sims = _rows(self.vectors, rows) @ q[i]
            top = np.argsort(-sims, kind="stable")[:k]
            out_s[i], out_i[i] = sims[top], rows[top]
        return out_s, out_i

    def _exact_subset(self, q: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = q @ _rows(self.vectors, rows).T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        return np.take_along_axis(top_s, order, axis=1), rows[np.take_along_axis(top, order, axis=1)]


def split_fast_scan(index: faiss.IndexPQFastScan, parts: int) -> faiss.Index:
    """The same codes as `parts` contiguous slices searched on parallel threads (`IndexShards`):
    the same candidates and scores as `index` (up to the order of equal scores), each slice on its
    own core. Slices are cut at FAISS's code blocks (`bbs` vectors), so the packed codes are copied
    as they are, without re-encoding."""
    blocks = index.ntotal2 // index.bbs
    parts = max(1, min(parts, blocks))
    if parts == 1:
        return index
    stride = index.get_block_stride()
    codes = faiss.AlignedTable_to_array(index.codes)
    shards = faiss.IndexShards(index.d, True, True)  # threaded, successive ids
    bounds = np.linspace(0, blocks, parts + 1).astype(int)
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        part = faiss.IndexPQFastScan(index.d, index.pq.M, index.pq.nbits, index.metric_type, index.bbs)
        part.pq = index.pq
        part.is_trained = True
        faiss.copy_array_to_AlignedTable(np.ascontiguousarray(codes[b0 * stride : b1 * stride]), part.codes)
        part.ntotal = int(min(index.ntotal, b1 * index.bbs) - b0 * index.bbs)
        part.ntotal2 = int((b1 - b0) * index.bbs)
        shards.add_shard(part)  # the Python wrapper keeps a reference to each part
    return shards


def _refine_index(codes: faiss.Index, vectors: np.ndarray) -> tuple[faiss.IndexRefine, np.ndarray]:
    """A FAISS refine index over `codes` whose exact vectors are `vectors` as stored (float16 in a
    float16 scalar quantizer: the same bits; float32 in a flat index), and a numpy view of those
    vectors inside FAISS (so they are held once, for the other re-scoring paths too)."""
    n, d = vectors.shape
    if vectors.dtype == np.float16:
        exact = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    else:
        vectors = vectors.astype(np.float32, copy=False)
        exact = faiss.IndexFlatIP(d)
    exact.is_trained = True
    faiss.copy_array_to_vector(np.ascontiguousarray(vectors).view(np.uint8).reshape(-1), exact.codes)
    exact.ntotal = n
    view = faiss.rev_swig_ptr(exact.codes.data(), n * d * vectors.dtype.itemsize)
    view = view.view(vectors.dtype).reshape(n, d).view(_HeldArray)
    view.owner = exact  # the FAISS memory lives as long as any view of it
    view.flags.writeable = False
    return faiss.IndexRefine(codes, exact), view  # (the wrapper keeps references to both)


class _HeldArray(np.ndarray):
    """A numpy view of memory FAISS owns, holding a reference to its owner."""

    owner: object = None

    def __array_finalize__(self, obj: object) -> None:
        self.owner = getattr(obj, "owner", None)


def _rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 copy of the given (sorted) rows: a memory-mapped file is read only there.

    A whole-file memory map is read with `os.pread` rather than through the mapping: a mapped read
    makes the kernel map whole runs of cached pages around each row, all of which then count as
    this process's resident memory (see benchmarks/results/search.md).
    """
    whole = _whole_file(vectors)
    if whole is None or len(rows) > 65_536:
        return np.asarray(vectors[rows], dtype=np.float32)
    path, offset = whole
    row_bytes = vectors.shape[1] * vectors.dtype.itemsize
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = b"".join(os.pread(fd, row_bytes, offset + int(r) * row_bytes) for r in rows)
    finally:
        os.close(fd)
    return np.frombuffer(raw, dtype=vectors.dtype).reshape(len(rows), -1).astype(np.float32)


def _whole_file(vectors: np.ndarray) -> tuple[str, int] | None:
    """(path, byte offset of row 0) when `vectors` maps a whole .npy file's array, else None."""
    path = getattr(vectors, "filename", None)
    if not isinstance(vectors, np.memmap) or not path or not vectors.flags.c_contiguous:
        return None
    offset = int(getattr(vectors, "offset", 0))
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    return (path, offset) if offset + vectors.nbytes == size else None


def _remap(vectors: np.ndarray) -> np.ndarray:
    """A fresh mapping of a whole-file memory map (releases the pages the old one touched)."""
    if _whole_file(vectors) is None:
        return vectors
    return np.load(vectors.filename, mmap_mode="r", allow_pickle=False)


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


def _read_index(path: Path, n: int, d: int, kind: str, pq_codes: int) -> faiss.Index | None:
    """A cached index when it is readable and has the expected shape, kind and product-quantizer
    codes a vector; None means rebuild."""
    if not path.is_file():
        return None
    try:
        index = faiss.read_index(str(path))
    except RuntimeError:
        return None
    expected = {"hnsw": faiss.IndexHNSWFlat, "codes": faiss.IndexPQFastScan, "ivf": faiss.IndexIVFPQFastScan}
    if index.ntotal != n or index.d != d or not isinstance(index, expected[kind]):
        return None
    if kind in ("codes", "ivf") and index.pq.M != pq_codes:
        return None
    return index


def _drop_missing(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS pads with id -1 when fewer than k results were found; trim columns that are all padding."""
    valid = (ids >= 0).all(axis=0)
    keep = ids.shape[1] if valid.all() else int(np.argmin(valid))
    return scores[:, :keep], ids[:, :keep].astype(np.int64)
