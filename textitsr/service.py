"""The one facade the app and the CLI call: a model and an archive store, loaded once, queried many times.

`SearchService.open(store)` loads the checkpoint recorded in the store (or the one given), refuses a
store built with another model, reads the store's embeddings and metadata and builds the FAISS
indexes. The three queries after that (text -> pairs, pair -> pairs, pair -> sentences) are pure
functions of those objects; `refresh` re-reads a store that grew (scenes added by `index.build`).
What the archive holds (pair records, thumbnails, footprints, statistics) the service answers too
(`pair`, `thumbnails`, `footprints`, `stats`, ...), so callers never reach into its catalog or store.
Bad input raises `InputError`, store problems `StoreError`, both with a message fit to show to a person.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textitsr.data.pairs import Bounds
from textitsr.errors import InputError, StoreError
from textitsr.index.calibration import MatchCalibration, calibrate_text_matches
from textitsr.index.catalog import ArchiveStats, Catalog, PairHit
from textitsr.index.manifest import MANIFEST
from textitsr.index.places import date_order, overlapping, same_place
from textitsr.index.search import Filters, SearchConfig, VectorIndex
from textitsr.index.store import Store, read_manifest

if TYPE_CHECKING:
    from textitsr.index.sharded import ShardedIndex
    from textitsr.index.tiles import SceneArea

__all__ = [
    "ArchiveStats", "CaptionHit", "DatedQuery", "PairHit", "ScoreMap", "SearchFilters", "SearchService",
]

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


@dataclass(frozen=True)
class DatedQuery:
    """A place seen at two chosen dates: the before/after images (uint8 RGB, as embedded) and the id of
    the stored pair with exactly those dates, or None when the archive pairs them with other dates."""

    pair_id: str | None
    before: np.ndarray
    after: np.ndarray
    dates: tuple[str | None, str | None]
    bounds: Bounds | None


@dataclass(frozen=True)
class ScoreMap:
    """A text query's score for the archive's footprinted pairs (best first): what a heat map draws."""

    pair_ids: list[str]
    bounds: np.ndarray  # (n, 4) lon/lat west, south, east, north
    scores: np.ndarray  # (n,) cosine similarity to the query


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
        self.model = model
        self.checkpoint = Path(checkpoint)
        self.search_config = search_config or SearchConfig()
        #: Dask scheduler address (or Client) whose workers search the pair shards; None: this process.
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._full_model: Any = None
        #: What text queries are encoded on (ONNX Runtime when it matches PyTorch, else PyTorch).
        self.text_backend = getattr(model, "backend_choice", None)  # an exported query graph
        if self.text_backend is None:
            from textitsr.embedding.encode import QUERY_THREADS
            from textitsr.models.onnx_text import use_text_backend

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

    @classmethod
    def open_query_graph(cls, store: Path, *, search_config: SearchConfig | None = None
                         ) -> SearchService | None:
        """Text queries only, without torch or transformers: the store's model's exported query
        graph (`embedding.query_graph`) on ONNX Runtime. None when that model has no graph yet."""
        from textitsr.embedding.query_graph import QueryGraph

        store = Path(store)
        manifest = read_manifest(store) if store.is_dir() else None
        if manifest is None:
            raise StoreError(f"{store}: store folder not found; build one with `textitsr index`")
        graph = QueryGraph.find(str(manifest["checkpoint_id"]))
        if graph is None:
            return None
        opened = Store.open(store, checkpoint_id=graph.checkpoint_id)
        if graph.embed_dim != opened.embed_dim:
            raise StoreError(f"{store}: {opened.embed_dim}-d store, query graph gives {graph.embed_dim}-d")
        return cls(graph, opened, Path(manifest.get("checkpoint") or store), search_config)

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
        self._stamp = _manifest_stamp(store.root)
        self._caption_index: tuple[VectorIndex, list[str], list[str]] | None = None
        self._caption_penalty: np.ndarray | None = None
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
        """Re-read the store now (queries also do it by themselves when its manifest changed)."""
        with self._lock:
            self._load(Store.open(self.store.root, checkpoint_id=self.store.checkpoint_id))

    def _fresh(self) -> None:
        """Re-read the store when a writer (`index.archive.Archive`) committed a new manifest since
        it was read: one stat per call, so scenes added by any process show up in the next query."""
        if _manifest_stamp(self.store.root) != self._stamp:
            with self._lock:
                if _manifest_stamp(self.store.root) != self._stamp:
                    self._load(Store.open(self.store.root, checkpoint_id=self.store.checkpoint_id))

    @property
    def archive_id(self) -> str:
        """What this service searches (store folder, model, pair count): a cache key for pages."""
        return f"{self.store.root.resolve()}:{self.store.checkpoint_id}:{len(self)}"

    def __len__(self) -> int:
        self._fresh()
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
        return encode_rgb_pairs(self._image_model(), [imgs[0]], [imgs[1]])

    def _image_model(self) -> Any:
        """The model that embeds new images: a service opened text-only (the app's: its queries are
        mostly sentences and archive pairs) loads the whole checkpoint on the first image query."""
        from textitsr.models.text_side import TextSide

        if not isinstance(self.model, TextSide):
            return self.model
        with self._lock:
            if self._full_model is None:
                from textitsr.embedding.encode import load_model

                self._full_model = load_model(self.checkpoint, next(self.model.parameters()).device.type)
        return self._full_model

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
        text = " ".join(query.split())[:MAX_QUERY_CHARS]
        if getattr(self.model, "backend_choice", None) is not None:  # a query graph: no torch here
            return self.model.encode_texts([text])
        from textitsr.embedding.encode import QUERY_THREADS, encode_texts, torch_threads

        with torch_threads(QUERY_THREADS):
            return encode_texts(self.model, [text])

    def search_text(self, query: str, k: int = 10, filters: SearchFilters | None = None) -> list[PairHit]:
        """The k pairs that best match a text query (any language the text encoder reads), best first."""
        k = self._check_k(k)
        self._fresh()
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
        elsewhere: bool = False,
        query_bounds: Bounds | None = None,
    ) -> list[PairHit]:
        """Pairs most similar to an archive pair (itself excluded) or to uploaded before/after images.

        `elsewhere`: leave out every pair sharing ground with the query's footprint (`query_bounds`, by
        default the query pair's own), so the same place at other dates does not fill the results."""
        k = self._check_k(k)
        self._fresh()
        mask = self.catalog.mask(filters)
        vec, row = self._pair_vector(pair_id, before, after)
        if row is not None:
            mask = np.ones(len(self), bool) if mask is None else mask.copy()
            mask[row] = False
        if elsewhere:
            if query_bounds is None:
                if pair_id is None:
                    raise InputError("elsewhere: expected query_bounds for a query given as images")
                query_bounds = self.footprint(pair_id)
            mask = np.ones(len(self), bool) if mask is None else mask.copy()
            mask &= ~overlapping(self.catalog.masks, query_bounds)
        return self._query_pairs(vec, k, mask)

    def footprint(self, pair_id: str) -> Bounds:
        """Lon/lat footprint of an archive pair; InputError when it has none (not georeferenced)."""
        self._fresh()
        m, row = self.catalog.masks, self.catalog.row_of(pair_id)
        bounds = (float(m.west[row]), float(m.south[row]), float(m.east[row]), float(m.north[row]))
        if any(np.isnan(bounds)):
            raise InputError(f"pair_id={pair_id!r}: has no geographic footprint (not georeferenced)")
        return bounds

    def _place_rows(self, pair_id: str) -> np.ndarray:
        """Store rows of every pair at `pair_id`'s place, in the order their changes happened."""
        rows = np.flatnonzero(same_place(self.catalog.masks, self.footprint(pair_id)))
        return date_order(self.catalog.masks, rows)

    def _place_views(self, pair_id: str) -> dict[str, tuple[int, str]]:
        """Each date `pair_id`'s place was seen on -> (store row, "before" or "after") of a pair
        showing it then."""
        m, views = self.catalog.masks, {}
        for row in self._place_rows(pair_id).tolist():
            for when, date in (("before", m.date_before[row]), ("after", m.date_after[row])):
                if not np.isnat(date):
                    views.setdefault(str(date), (row, when))
        return views

    def place_dates(self, pair_id: str) -> list[str]:
        """Every acquisition date the archive holds at `pair_id`'s place, oldest first."""
        return sorted(self._place_views(pair_id))

    def pair_query(self, pair_id: str) -> DatedQuery:
        """An archive pair as a query: its own images, dates and footprint."""
        self._fresh()
        record = self.catalog.pair(pair_id)
        before, after = self.catalog.thumbnails(pair_id)
        return DatedQuery(pair_id, before, after, record["dates"], record["bounds"])

    def pair_at_dates(self, pair_id: str, date_before: str, date_after: str) -> DatedQuery:
        """`pair_id`'s place seen at two of its dates (any two, not only those the archive pairs).

        The images are the stored thumbnails of those dates, which for tiles up to the thumbnail size
        are the very pixels that were embedded."""
        if str(date_before) >= str(date_after):
            raise InputError(f"dates {date_before} -> {date_after}: expected the before date to be earlier")
        dates = (str(date_before), str(date_after))
        views = self._place_views(pair_id)
        missing = [d for d in dates if d not in views]
        if missing:
            known = ", ".join(sorted(views))
            raise InputError(f"dates {missing}: no image of this place then in the archive (it has {known})")
        m, ids = self.catalog.masks, self.catalog.meta["pair_id"].to_numpy()
        images = {}
        for date in dates:
            row, when = views[date]
            images[date] = self.catalog.thumbnails(str(ids[row]))[0 if when == "before" else 1]
        stored = next((str(ids[r]) for r in self._place_rows(pair_id).tolist()
                       if (str(m.date_before[r]), str(m.date_after[r])) == dates), None)
        return DatedQuery(stored, images[dates[0]], images[dates[1]], dates, self.footprint(pair_id))

    def place_imagery(self, pair_id: str, date_before: str, date_after: str) -> SceneArea | None:
        """The map imagery of `pair_id`'s place at two of its dates (their scenes' tile pyramids), as
        one area whose before/after are those dates; None when the archive has no tiles of them."""
        from textitsr.index.tiles import SceneArea, TileIndex

        views = self._place_views(pair_id)
        ids = self.catalog.meta["pair_id"].to_numpy()
        tiles = TileIndex.read(self.store.tiles_dir)

        def pyramid(date: str) -> Any:  # the tiles of the scene file the archive read `date` from
            if date not in views:
                return None
            row, when = views[date]
            return tiles.tiles_of(self.catalog.pair(str(ids[row]))["location"].get(when))

        before, after = pyramid(str(date_before)), pyramid(str(date_after))
        if before is None and after is None:
            return None
        n_pairs = len(self._place_rows(pair_id))
        return SceneArea(f"{date_before} → {date_after}", self.footprint(pair_id), n_pairs, before, after)

    def place_history(
        self,
        pair_id: str,
        *,
        query: str | None = None,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
    ) -> list[PairHit]:
        """Every pair at `pair_id`'s place in date order, scored against a text query or a before/after
        query (default: the pair itself): when did the change happen? `rank` is the position in time."""
        if query is not None:
            vec = self.encode_query(query)
        elif before is not None or after is not None:
            vec, _ = self._pair_vector(None, before, after)
        else:
            vec, _ = self._pair_vector(pair_id, None, None)
        rows = self._place_rows(pair_id)
        stored = np.sort(rows)
        scores = np.asarray(self._pairs.vectors[stored], np.float32) @ vec[0].astype(np.float32)
        score_of = dict(zip(stored.tolist(), scores.tolist(), strict=True))
        return [self.catalog.hit(i + 1, score_of[r], r) for i, r in enumerate(rows.tolist())]

    def score_map(self, query: str, *, filters: SearchFilters | None = None, limit: int = 5000) -> ScoreMap:
        """The text query's score for up to `limit` best-matching footprinted pairs: where in the archive
        the described change happens (hot spots), not only the top k."""
        limit = self._check_k(limit)
        self._fresh()
        m = self.catalog.masks
        mask = ~(np.isnan(m.west) | np.isnan(m.south) | np.isnan(m.east) | np.isnan(m.north))
        extra = self.catalog.mask(filters)
        if extra is not None:
            mask &= extra
        ids = self.catalog.meta["pair_id"].to_numpy()
        if len(self) == 0 or not mask.any():
            return ScoreMap([], np.zeros((0, 4)), np.zeros(0, np.float32))
        scores, rows = self._pairs.search(self.encode_query(query), min(limit, int(mask.sum())), mask)
        rows, scores = rows[0], scores[0]
        keep = rows >= 0
        rows, scores = rows[keep], scores[keep]
        bounds = np.stack([m.west[rows], m.south[rows], m.east[rows], m.north[rows]], axis=1)
        return ScoreMap([str(ids[r]) for r in rows.tolist()], bounds, scores.astype(np.float32))

    def describe_pair(
        self,
        pair_id: str | None = None,
        *,
        before: np.ndarray | None = None,
        after: np.ndarray | None = None,
        k: int = 5,
    ) -> list[CaptionHit]:
        """The archive's sentences that best describe a pair (distinct sentences, best first).

        Ranked by cosine less each sentence's hubness against the archive's pairs
        (`embedding.hubness`): a sentence that fits every pair ("there is no change") no longer tops
        every list. `score` is that ranking score; `confidence` reads the plain cosine."""
        k = self._check_k(k)
        self._fresh()
        vec, _ = self._pair_vector(pair_id, before, after)
        index, texts, pair_ids = self._captions()
        if not texts:
            return []
        penalty = self._describe_penalty()
        # Re-rank the cosine shortlist: exact up to 500 distinct sentences; beyond, a sentence would
        # have to fall outside the top 500 by cosine and still win on the penalty.
        shortlist = min(len(texts), max(20 * k, 500))
        cosines, rows = index.search(vec, shortlist)
        cosines, rows = cosines[0], rows[0]
        keep = rows >= 0
        cosines, rows = cosines[keep], rows[keep]
        scores = cosines - penalty[rows]
        best = np.argsort(-scores, kind="stable")[:k]
        calibration = self.match_calibration()
        return [
            CaptionHit(rank=i + 1, score=float(scores[j]), text=texts[rows[j]], pair_id=pair_ids[rows[j]],
                       confidence=calibration.confidence(float(cosines[j])))
            for i, j in enumerate(best.tolist())
        ]

    def _describe_penalty(self) -> np.ndarray:
        """HUB_WEIGHT x each distinct sentence's hubness over the archive's pairs (once per store
        version)."""
        from textitsr.embedding.hubness import HUB_WEIGHT, archive_hubness

        if self._caption_penalty is None:
            index, _, _ = self._captions()
            self._caption_penalty = HUB_WEIGHT * archive_hubness(index.vectors, self._pairs.vectors)
        return self._caption_penalty


    # What the archive holds, for the app and the API: they ask the service, never its catalog or store.

    @property
    def store_root(self) -> Path:
        """The archive's store folder."""
        return self.store.root

    @property
    def checkpoint_id(self) -> str:
        """The id of the model the archive was embedded with."""
        return self.store.checkpoint_id

    def has_pair(self, pair_id: str) -> bool:
        self._fresh()
        return self.catalog.has_pair(pair_id)

    def pair(self, pair_id: str) -> dict[str, Any]:
        """A pair's record (id, source, split, dates, bounds, captions, ...); InputError when unknown."""
        self._fresh()
        return self.catalog.pair(pair_id)

    def thumbnails(self, pair_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A pair's (before, after) RGB thumbnails; StoreError when the store holds none."""
        self._fresh()
        return self.catalog.thumbnails(pair_id)

    def change_reading(self, pair_id: str) -> dict[str, float] | None:
        """The model's reading of a pair's change: its change-type distribution (type -> share),
        read from the stored embedding; None when the model has no type probe or was fine-tuned."""
        from textitsr.models.probes import type_reading

        self._fresh()
        vector, _ = self._pair_vector(pair_id, None, None)  # one row, as pair queries read it
        if self._type_part is None:
            return None
        return type_reading(vector[0], self._type_part)

    @cached_property
    def _type_part(self) -> slice | None:
        from textitsr.models.checkpoint import type_reading_part

        return type_reading_part(self.checkpoint) if self.checkpoint.is_dir() else None

    def change_stats(self, pair_id: str) -> dict[str, float] | None:
        """A pair's spectral change statistics (NDVI/NDWI/NDBI), None when its bands do not allow them."""
        self._fresh()
        return self.catalog.change_stats(pair_id)

    def footprints(self, filters: Filters | None = None, *, limit: int | None = None) -> dict:
        """The pairs' footprints as a GeoJSON FeatureCollection (those `filters` keep, at most `limit`)."""
        self._fresh()
        return self.catalog.footprints(filters, limit=limit)

    def stats(self) -> ArchiveStats:
        """Counts, sources, dates and extent of the archive."""
        self._fresh()
        return self.catalog.stats()

    def acquisition_dates(self) -> dict[str, int]:
        """ISO date -> number of pairs acquired then (before or after)."""
        self._fresh()
        return self.catalog.acquisition_dates()

    def scene_areas(self) -> list[SceneArea]:
        """The archive's areas with their map tiles, largest first."""
        self._fresh()
        return self.catalog.scene_areas()

    def tile_size(self) -> int | None:
        """Side (px) of most of the archive's tiles: the size new scenes should be cut into."""
        self._fresh()
        return self.catalog.tile_size()


def _manifest_stamp(root: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of a store's manifest: changes with every commit (written and renamed)."""
    try:
        st = (Path(root) / MANIFEST).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


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
