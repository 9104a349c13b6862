"""The one facade the app and the CLI call: a model and an archive store, loaded once, queried many times.

`SearchService.open(store)` loads the checkpoint recorded in the store (or the one given), refuses a
store built with another model, reads the store's embeddings and metadata and builds the FAISS
indexes. Every query method after that is a pure function of those objects (except `add_scenes`,
which appends a shard and refreshes them). Bad input raises `InputError`, store problems
`StoreError`, both with a message fit to show to a person.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textitsr.data.pairs import Bounds
from textitsr.errors import InputError, StoreError
from textitsr.index.search import FilterMasks, Filters, SearchConfig, VectorIndex
from textitsr.index.store import Store, parse_json_field, read_manifest

#: Longer queries are cut before tokenising (the text encoder keeps only its first tokens anyway).
MAX_QUERY_CHARS = 2_000


@dataclass(frozen=True)
class SearchFilters(Filters):
    """bbox: lon/lat (W, S, E, N), footprints that intersect it; date_from/date_to: ISO dates, the
    pair's before and after dates must lie within them; sources: source names to keep."""


@dataclass(frozen=True)
class PairHit:
    rank: int
    score: float
    pair_id: str
    source: str
    split: str | None
    bounds: Bounds | None
    dates: tuple[str | None, str | None]
    captions: list[str]
    change_type: str | None


@dataclass(frozen=True)
class CaptionHit:
    rank: int
    score: float
    text: str
    pair_id: str | None


@dataclass(frozen=True)
class ArchiveStats:
    n_pairs: int
    n_captions: int
    sources: dict[str, int]
    splits: dict[str, int]
    date_range: tuple[str | None, str | None]
    bounds: Bounds | None
    model: dict


def _none(v: Any) -> Any:
    """pandas/numpy missing values -> None, numpy scalars -> Python."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return _none(v.item())
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return v


class SearchService:
    """Text -> pairs, pair -> pairs, pair -> captions over one archive store."""

    def __init__(
        self, model: Any, store: Store, checkpoint: Path, search_config: SearchConfig | None = None
    ) -> None:
        self.model = model
        self.checkpoint = Path(checkpoint)
        self.search_config = search_config or SearchConfig()
        self._lock = threading.Lock()
        self._load(store)

    # ------------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        store: Path,
        checkpoint: Path | None = None,
        device: str = "cpu",
        *,
        search_config: SearchConfig | None = None,
    ) -> SearchService:
        """Load the model and the store once. `checkpoint` None -> the one recorded in the store."""
        from textitsr.index.build import load_model
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
        model = load_model(checkpoint, device)
        if int(model.config.embed_dim) != opened.embed_dim:
            raise StoreError(f"{store}: {opened.embed_dim}-d store, model gives {model.config.embed_dim}-d")
        return cls(model, opened, checkpoint, search_config)

    def _load(self, store: Store) -> None:
        """(Re)read the store and build the indexes and filter masks."""
        store.validate()
        self.store = store
        meta = store.metadata()
        self._meta = meta
        self._row = {pid: i for i, pid in enumerate(meta["pair_id"].tolist())}
        self._masks = FilterMasks(meta)
        self._pairs = VectorIndex(
            store.pair_embeddings(), self.search_config, cache=self._cache_path("pairs")
        )
        caps = store.captions()
        emb = store.caption_embeddings()
        # One row per distinct sentence: archives repeat captions ("no change") thousands of times.
        first = ~caps["text"].duplicated().to_numpy() if len(caps) else np.zeros(0, bool)
        self._cap_text = caps["text"].to_numpy()[first].tolist()
        self._cap_pair = caps["pair_id"].to_numpy()[first].tolist()
        self._captions = VectorIndex(emb[first], self.search_config, cache=self._cache_path("captions"))

    def _cache_path(self, what: str) -> Path | None:
        """Where the HNSW graph of this exact shard list is kept (None: small store, or read-only)."""
        n = self.store.manifest.get("n_pairs" if what == "pairs" else "n_captions", 0)
        if int(n) < self.search_config.hnsw_threshold:
            return None
        key = json.dumps([what, self.store.manifest["shards"], self.search_config.__dict__], sort_keys=True)
        folder = self.store.root / "index"
        try:
            folder.mkdir(exist_ok=True)
        except OSError:
            return None
        name = f"{what}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.faiss"
        for old in folder.glob(f"{what}-*.faiss"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return folder / name

    # ------------------------------------------------------------------------------- helpers
    def __len__(self) -> int:
        return len(self._meta)

    @staticmethod
    def _check_k(k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"k={k!r}: expected a positive whole number of results")
        if k <= 0:
            raise InputError(f"k={k}: expected a positive number of results (1 or more)")
        return int(k)

    def _row_of(self, pair_id: Any) -> int:
        if not isinstance(pair_id, str) or not pair_id.strip():
            raise InputError(f"pair_id={pair_id!r}: expected the id of a pair in the archive")
        row = self._row.get(pair_id)
        if row is None:
            raise InputError(f"pair_id={pair_id!r}: no such pair in the archive {self.store.root}")
        return row

    def _hit(self, rank: int, score: float, row: int) -> PairHit:
        r = self._meta.iloc[row]
        return PairHit(
            rank=rank,
            score=float(score),
            pair_id=str(r["pair_id"]),
            source=str(r["source"]),
            split=_none(r["split"]),
            bounds=self._bounds(r),
            dates=(_none(r["date_before"]), _none(r["date_after"])),
            captions=[str(c) for c in (r["captions"] if r["captions"] is not None else [])],
            change_type=_none(r["change_type"]),
        )

    @staticmethod
    def _bounds(r: Any, prefix: str = "") -> Bounds | None:
        vals = [_none(r[f"{prefix}{c}"]) for c in ("west", "south", "east", "north")]
        return None if any(v is None for v in vals) else tuple(float(v) for v in vals)  # type: ignore[return-value]

    def _filters(self, filters: SearchFilters | Filters | None) -> np.ndarray | None:
        if filters is not None and not isinstance(filters, Filters):
            raise InputError(f"filters={filters!r}: expected a SearchFilters")
        return self._masks.mask(filters)

    def _query_pairs(self, vec: np.ndarray, k: int, mask: np.ndarray | None) -> list[PairHit]:
        if len(self) == 0:
            return []
        scores, rows = self._pairs.search(vec, k, mask)
        return [self._hit(i + 1, s, r) for i, (s, r) in enumerate(zip(scores[0], rows[0], strict=True))]

    def _encode_images(self, before: Any, after: Any) -> np.ndarray:
        from textitsr.index.build import encode_rgb_pairs

        imgs = [_as_rgb(before, "before"), _as_rgb(after, "after")]
        if imgs[0].shape != imgs[1].shape:
            raise InputError(f"before {imgs[0].shape} and after {imgs[1].shape}: expected images of one size")
        return encode_rgb_pairs(self.model, [imgs[0]], [imgs[1]])

    def _pair_vector(self, pair_id: str | None, before: Any, after: Any) -> tuple[np.ndarray, int | None]:
        if pair_id is not None:
            if before is not None or after is not None:
                raise InputError("give either pair_id or before/after images, not both")
            row = self._row_of(pair_id)
            return self._pairs.vectors[row : row + 1], row
        if before is None or after is None:
            raise InputError("expected a pair_id, or both before and after images")
        return self._encode_images(before, after), None

    # ------------------------------------------------------------------------------- queries
    def encode_query(self, query: Any) -> np.ndarray:
        """(1, d) embedding of a text query (validated; very long text is cut)."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("query: expected a non-empty description of the change to look for")
        from textitsr.index.build import encode_texts

        return encode_texts(self.model, [" ".join(query.split())[:MAX_QUERY_CHARS]])

    def search_text(self, query: str, k: int = 10, filters: SearchFilters | None = None) -> list[PairHit]:
        """The k pairs that best match a text query (any language the text encoder reads), best first."""
        k = self._check_k(k)
        mask = self._filters(filters)
        vec = self.encode_query(query)
        return self._query_pairs(vec, k, mask)

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
        mask = self._filters(filters)
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
        if not self._cap_text:
            return []
        scores, rows = self._captions.search(vec, k)
        return [
            CaptionHit(rank=i + 1, score=float(s), text=self._cap_text[r], pair_id=self._cap_pair[r])
            for i, (s, r) in enumerate(zip(scores[0], rows[0], strict=True))
        ]

    # ------------------------------------------------------------------------------- records
    def pair(self, pair_id: str) -> dict[str, Any]:
        """Everything the store knows about one pair (metadata row, parsed), as a dict."""
        r = self._meta.iloc[self._row_of(pair_id)]
        rec = {c: _none(r[c]) for c in self._meta.columns}
        rec["captions"] = [str(c) for c in (r["captions"] if r["captions"] is not None else [])]
        where = f"{self.store.root}: shard {r['shard']}, pair {pair_id!r}"
        rec["location"] = parse_json_field(_none(r["location"]), where, "location") or {}
        rec["change_stats"] = parse_json_field(_none(r["change_stats"]), where, "change_stats")
        rec["bounds"] = self._bounds(r)
        rec["native_bounds"] = self._bounds(r, "native_")
        rec["dates"] = (rec["date_before"], rec["date_after"])
        return rec

    def thumbnails(self, pair_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(before, after) uint8 RGB thumbnails of a pair."""
        row = self._row_of(pair_id)
        return self.store.thumbnails(str(self._meta.iloc[row]["shard"]), pair_id)

    def change_stats(self, pair_id: str) -> dict[str, float] | None:
        return self.pair(pair_id)["change_stats"]

    def footprints(self, filters: SearchFilters | None = None, *, limit: int | None = None) -> dict:
        """GeoJSON FeatureCollection of the (filtered) pairs' lon/lat footprints."""
        mask = self._filters(filters)
        m = self._masks
        has = ~(np.isnan(m.west) | np.isnan(m.south) | np.isnan(m.east) | np.isnan(m.north))
        rows = np.flatnonzero(has if mask is None else has & mask)
        if limit is not None:
            rows = rows[: max(int(limit), 0)]
        meta = self._meta
        features = []
        for i in rows.tolist():
            w, s, e, n = float(m.west[i]), float(m.south[i]), float(m.east[i]), float(m.north[i])
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
                    },
                    "properties": {
                        "pair_id": str(meta.at[i, "pair_id"]),
                        "source": str(meta.at[i, "source"]),
                        "date_before": _none(meta.at[i, "date_before"]),
                        "date_after": _none(meta.at[i, "date_after"]),
                        "change_type": _none(meta.at[i, "change_type"]),
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    def stats(self) -> ArchiveStats:
        meta, m = self._meta, self._masks
        before = meta["date_before"].dropna().astype(str)
        after = meta["date_after"].dropna().astype(str)
        dates = sorted([*before.tolist(), *after.tolist()])
        has = ~np.isnan(m.west)
        bounds = None
        if has.any():
            bounds = (
                float(np.nanmin(m.west)),
                float(np.nanmin(m.south)),
                float(np.nanmax(m.east)),
                float(np.nanmax(m.north)),
            )
        model = dict(self.store.manifest.get("model") or {})
        model.update(
            checkpoint_id=self.store.checkpoint_id,
            embed_dim=self.store.embed_dim,
            index=self._pairs.kind,
            store=str(self.store.root),
        )
        return ArchiveStats(
            n_pairs=len(meta),
            n_captions=int(self.store.manifest.get("n_captions", 0)),
            sources={str(k): int(v) for k, v in meta["source"].value_counts().items()},
            splits={str(k): int(v) for k, v in meta["split"].fillna("unknown").value_counts().items()},
            date_range=(dates[0], dates[-1]) if dates else (None, None),
            bounds=bounds,
            model=model,
        )

    def pair_embeddings(self) -> tuple[list[str], np.ndarray]:
        """(pair ids, (N, d) float32 copy of their embeddings), in store order (for ANNEAL)."""
        return self._meta["pair_id"].astype(str).tolist(), self._pairs.vectors.copy()

    def tile_size(self, sample: int = 1000) -> int | None:
        """Side (px) of most of the archive's square tiles (from up to `sample` rows' pixel windows),
        or None when no row records one: the size new scenes should be cut into to match."""
        if "location" not in self._meta or len(self) == 0:
            return None
        rows = np.unique(np.linspace(0, len(self) - 1, min(sample, len(self))).astype(int))
        sizes: dict[int, int] = {}
        for text in self._meta["location"].iloc[rows]:
            try:
                window = json.loads(text).get("window") if _none(text) else None
            except (ValueError, AttributeError):
                window = None
            if isinstance(window, list) and len(window) == 4 and window[2] == window[3]:
                sizes[int(window[2])] = sizes.get(int(window[2]), 0) + 1
        return max(sizes, key=sizes.__getitem__) if sizes else None

    # ------------------------------------------------------------------------------- writing
    def add_scenes(
        self, paths: list[Path], progress: Callable[[float, str], None] | None = None, **options: Any
    ) -> int:
        """Tile a GeoTIFF scene pair (or series) into pairs, embed them and append them as new shards.

        `options` go to the GeoTIFF loader (tile_size, pairing, bands, ...). Returns the number of
        pairs added (0 when these scenes are already in the archive).
        """
        from textitsr.data.registry import open_source
        from textitsr.index.build import build_store

        paths = [Path(p) for p in paths]
        if len(paths) < 2:
            raise InputError(
                f"add_scenes: expected at least two GeoTIFF scenes of one place, got {len(paths)}"
            )
        for p in paths:
            if not p.is_file():
                raise InputError(f"{p}: scene file not found")
        for name in ("tile_size", "stride"):
            value = options.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise InputError(f"{name}={value!r}: expected a whole number of pixels")
        with self._lock:
            source = open_source(paths, kind="geotiff", **options)
            before = len(self)
            build_store(self.checkpoint, source, self.store.root, progress=progress or False)
            self._load(Store.open(self.store.root, checkpoint_id=self.store.checkpoint_id))
            return len(self) - before


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
