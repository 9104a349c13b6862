"""The one facade the app and the CLI call: a model and an archive store, loaded once, queried many times.

`SearchService.open(store)` loads the checkpoint recorded in the store (or the one given), refuses a
store built with another model, reads the store's embeddings and metadata and builds the FAISS
indexes. The three queries after that (text -> pairs, pair -> pairs, pair -> sentences) are pure
functions of those objects; `refresh` re-reads a store that grew (scenes added by `index.build`).
What the archive holds (pair records, thumbnails, footprints, statistics) is `service.catalog`.
Bad input raises `InputError`, store problems `StoreError`, both with a message fit to show to a person.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textitsr.errors import InputError, StoreError
from textitsr.index.calibration import MatchCalibration, calibrate_text_matches
from textitsr.index.catalog import ArchiveStats, Catalog, PairHit
from textitsr.index.search import Filters, SearchConfig, VectorIndex
from textitsr.index.store import Store, read_manifest

if TYPE_CHECKING:
    from textitsr.index.sharded import ShardedIndex

__all__ = ["ArchiveStats", "CaptionHit", "PairHit", "SearchFilters", "SearchService"]

#: Longer queries are cut before tokenising (the text encoder keeps only its first tokens anyway).
MAX_QUERY_CHARS = 2_000


@dataclass(frozen=True)
class SearchFilters(Filters):
    """bbox: lon/lat (W, S, E, N), footprints that intersect it; date_from/date_to: ISO dates, the
    pair's before and after dates must lie within them; sources: source names to keep."""


@dataclass(frozen=True)
class CaptionHit:
    rank: int
    score: float
    text: str
    pair_id: str | None
    #: Share (0-1) of the archive's own (caption, pair) scores this score reaches; None: unknown.
    confidence: float | None = None


class SearchService:
    """Text -> pairs, pair -> pairs, pair -> captions over one archive store."""

    def __init__(
        self,
        model: Any,
        store: Store,
        checkpoint: Path,
        search_config: SearchConfig | None = None,
        scheduler: Any = None,
        text_backend: str = "auto",
    ) -> None:
        from textitsr.embedding.encode import QUERY_THREADS
        from textitsr.models.onnx_text import use_text_backend

        self.model = model
        self.checkpoint = Path(checkpoint)
        self.search_config = search_config or SearchConfig()
        #: Dask scheduler address (or Client) whose workers search the pair shards; None: this process.
        self.scheduler = scheduler
        self._lock = threading.Lock()
        #: What text queries are encoded on (ONNX Runtime when it matches PyTorch, else PyTorch).
        self.text_backend = use_text_backend(
            getattr(model, "text_encoder", None), text_backend, threads=QUERY_THREADS
        )
        self._load(store)

    @classmethod
    def open(
        cls,
        store: Path,
        checkpoint: Path | None = None,
        device: str = "cpu",
        *,
        search_config: SearchConfig | None = None,
        scheduler: Any = None,
        text_only: bool = False,
        text_backend: str = "auto",
    ) -> SearchService:
        """Load the model and the store once. `checkpoint` None -> the one recorded in the store;
        `scheduler` (tcp://HOST:8786 or a Client): search the pair shards on that Dask cluster;
        `text_only`: load just the text encoder + head (text queries only, much quicker to open);
        `text_backend`: auto/torch/onnx, what text queries are encoded on (`models.onnx_text`)."""
        from textitsr.embedding.encode import load_model
        from textitsr.models.checkpoint import checkpoint_id

        store = Path(store)
        manifest = read_manifest(store) if store.is_dir() else None
        if manifest is None:
            raise StoreError(f"{store}: store folder not found; build one with `textitsr index`")
        if checkpoint is None:
            if not manifest.get("checkpoint"):
                raise StoreError(f"{store}: manifest records no checkpoint; pass the checkpoint folder")
            checkpoint = Path(manifest["checkpoint"])
            if not checkpoint.is_absolute():
                checkpoint = (store / checkpoint).resolve()
        checkpoint = Path(checkpoint)
        cid = checkpoint_id(checkpoint)
        opened = Store.open(store, checkpoint_id=cid)
        if text_only:
            from textitsr.models.text_side import load_text_side

            model = load_text_side(checkpoint, device)
        else:
            model = load_model(checkpoint, device)
        if int(model.config.embed_dim) != opened.embed_dim:
            raise StoreError(f"{store}: {opened.embed_dim}-d store, model gives {model.config.embed_dim}-d")
        return cls(model, opened, checkpoint, search_config, scheduler, text_backend)

    def _load(self, store: Store) -> None:
        """(Re)read the store and build the indexes and the catalog."""
        store.validate()
        pairs: VectorIndex | ShardedIndex
        if self.scheduler is not None:
            from textitsr.index.sharded import ShardedIndex

            pairs = ShardedIndex(store, self.scheduler)
        else:
            cache = self._cache_path(store, "pairs")
            pairs = VectorIndex(self._pair_vectors(store), self.search_config, cache=cache)
        catalog = Catalog(store, index_kind=pairs.kind)
        self.store, self.catalog, self._pairs = store, catalog, pairs
        self._caption_index: tuple[VectorIndex, list[str], list[str]] | None = None
        self._calibration: MatchCalibration | None = None

    def _captions(self) -> tuple[VectorIndex, list[str], list[str]]:
        """(index, texts, pair ids) of the archive's distinct sentences, built on first use."""
        if self._caption_index is None:
            caps = self.store.captions()
            emb = self.store.caption_embeddings()
            # One row per distinct sentence: archives repeat captions ("no change") thousands of times.
            first = ~caps["text"].duplicated().to_numpy() if len(caps) else np.zeros(0, bool)
            cache = self._cache_path(self.store, "captions")
            index = VectorIndex(emb[first], self.search_config, cache=cache)
            texts = caps["text"].to_numpy()[first].tolist()
            self._caption_index = (index, texts, caps["pair_id"].to_numpy()[first].tolist())
        return self._caption_index

    def _pair_vectors(self, store: Store) -> np.ndarray:
        """The pair embeddings for the index: memory-mapped float16 where the tier re-ranks from
        them (large archives: only candidates' rows are read), float32 in memory otherwise."""
        if self.search_config.kind(len(store)) not in VectorIndex.RERANK_KINDS:
            return store.pair_embeddings()
        key = hashlib.sha1(json.dumps(store.manifest["shards"], sort_keys=True).encode()).hexdigest()[:12]
        return store.pair_vectors(store.index_file("pair-vectors", key, suffix=".npy"))

    def _cache_path(self, store: Store, what: str) -> Path | None:
        """Where the index of this exact shard list is kept (None: quick to build, or read-only store)."""
        n = store.manifest.get("n_pairs" if what == "pairs" else "n_captions", 0)
        if self.search_config.kind(int(n)) not in VectorIndex.CACHED_KINDS:
            return None
        key = json.dumps([what, store.manifest["shards"], self.search_config.index_key()], sort_keys=True)
        return store.index_file(what, hashlib.sha1(key.encode()).hexdigest()[:12])

    def refresh(self) -> None:
        """Re-read the store: after `index.build.add_scenes` appended shards to it."""
        with self._lock:
            self._load(Store.open(self.store.root, checkpoint_id=self.store.checkpoint_id))

    @property
    def archive_id(self) -> str:
        """What this service searches (store folder, model, pair count): a cache key for pages."""
        return f"{self.store.root.resolve()}:{self.store.checkpoint_id}:{len(self)}"

    def __len__(self) -> int:
        return len(self.catalog)

    @staticmethod
    def _check_k(k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"k={k!r}: expected a positive whole number of results")
        if k <= 0:
            raise InputError(f"k={k}: expected a positive number of results (1 or more)")
        return int(k)

    def _query_pairs(self, vec: np.ndarray, k: int, mask: np.ndarray | None) -> list[PairHit]:
        if len(self) == 0:
            return []
        scores, rows = self._pairs.search(vec, k, mask)
        return [
            self.catalog.hit(i + 1, s, r) for i, (s, r) in enumerate(zip(scores[0], rows[0], strict=True))
        ]

    def _encode_images(self, before: Any, after: Any) -> np.ndarray:
        from textitsr.embedding.encode import encode_rgb_pairs

        imgs = [_as_rgb(before, "before"), _as_rgb(after, "after")]
        if imgs[0].shape != imgs[1].shape:
            raise InputError(f"before {imgs[0].shape} and after {imgs[1].shape}: expected images of one size")
        return encode_rgb_pairs(self.model, [imgs[0]], [imgs[1]])

    def _pair_vector(self, pair_id: str | None, before: Any, after: Any) -> tuple[np.ndarray, int | None]:
        if pair_id is not None:
            if before is not None or after is not None:
                raise InputError("give either pair_id or before/after images, not both")
            row = self.catalog.row_of(pair_id)
            return self._pairs.vectors[row : row + 1], row
        if before is None or after is None:
            raise InputError("expected a pair_id, or both before and after images")
        return self._encode_images(before, after), None

    def encode_query(self, query: Any) -> np.ndarray:
        """(1, d) embedding of a text query (validated; very long text is cut)."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("query: expected a non-empty description of the change to look for")
        from textitsr.embedding.encode import QUERY_THREADS, encode_texts, torch_threads

        with torch_threads(QUERY_THREADS):
            return encode_texts(self.model, [" ".join(query.split())[:MAX_QUERY_CHARS]])

    def search_text(self, query: str, k: int = 10, filters: SearchFilters | None = None) -> list[PairHit]:
        """The k pairs that best match a text query (any language the text encoder reads), best first."""
        k = self._check_k(k)
        mask = self.catalog.mask(filters)
        vec = self.encode_query(query)
        return self._query_pairs(vec, k, mask)

    def match_calibration(self) -> MatchCalibration:
        """What the archive's own captions score as queries (computed once): flags weak text matches
        and scales describing sentences' confidence (`index/calibration.py`)."""
        if self._calibration is None:
            index, _, pair_ids = self._captions()
            import pandas as pd

            rows = pd.Index(self.catalog.meta["pair_id"].astype(str)).get_indexer(pair_ids).astype(np.int64)
            self._calibration = calibrate_text_matches(
                index.vectors, self._pairs.vectors, self._best_pair_scores,
                caption_pairs=rows if (rows >= 0).all() else None,  # -1: a caption of no listed pair
            )
        return self._calibration

    def is_weak_match(self, query: str, best_score: float) -> bool:
        """Whether a text query's best pair stands out less than nearly all the archive's captions'."""
        vec = self.encode_query(query)
        index, texts, _ = self._captions()
        best_caption = float(index.search(vec, 1)[0][0, 0]) if texts else None
        return self.match_calibration().is_low(vec[0], best_score, best_caption)

    def _best_pair_scores(self, queries: np.ndarray) -> np.ndarray:
        """Top-1 score of each query row among all pairs (through the index: bounded memory)."""
        scores, _ = self._pairs.search(queries, 1)
        return scores[:, 0] if scores.shape[1] else np.full(len(queries), -np.inf, np.float32)

    def search_pair(
        self,
        pair_id: str | None = None,
        *,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
        k: int = 10,
        filters: SearchFilters | None = None,
    ) -> list[PairHit]:
        """Pairs most similar to an archive pair (itself excluded) or to uploaded before/after images."""
        k = self._check_k(k)
        mask = self.catalog.mask(filters)
        vec, row = self._pair_vector(pair_id, before, after)
        if row is not None:
            mask = np.ones(len(self), bool) if mask is None else mask.copy()
            mask[row] = False
        return self._query_pairs(vec, k, mask)

    def describe_pair(
        self,
        pair_id: str | None = None,
        *,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
        k: int = 5,
    ) -> list[CaptionHit]:
        """The archive's sentences that best describe a pair (distinct sentences, best first)."""
        k = self._check_k(k)
        vec, _ = self._pair_vector(pair_id, before, after)
        index, texts, pair_ids = self._captions()
        if not texts:
            return []
        scores, rows = index.search(vec, k)
        calibration = self.match_calibration()
        return [
            CaptionHit(rank=i + 1, score=float(s), text=texts[r], pair_id=pair_ids[r],
                       confidence=calibration.confidence(float(s)))
            for i, (s, r) in enumerate(zip(scores[0], rows[0], strict=True))
        ]


def _as_rgb(img: Any, name: str) -> np.ndarray:
    """Uploaded image -> uint8 H x W x 3 (grey is repeated, alpha dropped, [0, 1] floats scaled)."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise InputError(f"{name}: expected an H x W x 3 RGB image (at least 8 x 8), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)
