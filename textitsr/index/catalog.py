"""What an archive holds, read from its store: pair records, thumbnails, footprints, statistics.

The search service answers queries; the catalog answers "what is this pair / this archive": a
pair's parsed metadata row, its thumbnails, GeoJSON footprints for maps, the archive's counts,
dates, extent and model card, and the tile size new scenes should be cut into. It is built once per
opened store (one metadata read) and shared by the queries, which turn result rows into `PairHit`s
through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textitsr.data.pairs import Bounds
from textitsr.errors import InputError
from textitsr.index.search import FilterMasks, Filters
from textitsr.index.shards import parse_json_field
from textitsr.index.store import Store
from textitsr.index.tiles import SceneArea, TileIndex, scene_areas
from textitsr.safe_read import loads_bounded


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
    #: "year" where a date is known only to the year (stored as YYYY-01-01), "day", or None.
    date_precision: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True)
class ArchiveStats:
    n_pairs: int
    n_captions: int
    sources: dict[str, int]
    splits: dict[str, int]
    date_range: tuple[str | None, str | None]
    bounds: Bounds | None
    model: dict


def plain(v: Any) -> Any:
    """pandas/numpy missing values -> None, numpy scalars -> Python."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return plain(v.item())
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _bounds(r: Any, prefix: str = "") -> Bounds | None:
    vals = [plain(r[f"{prefix}{c}"]) for c in ("west", "south", "east", "north")]
    return None if any(v is None for v in vals) else tuple(float(v) for v in vals)  # type: ignore[return-value]


def _captions(r: Any) -> list[str]:
    return [str(c) for c in (r["captions"] if r["captions"] is not None else [])]


class Catalog:
    """Pair records of one opened store, in store order (row i <-> embedding i)."""

    def __init__(self, store: Store, index_kind: str | None = None) -> None:
        self.store = store
        #: Which search tier serves this archive (shown on the model card).
        self.index_kind = index_kind
        self.meta = store.metadata()
        self.masks = FilterMasks(self.meta)
        self._row = {pid: i for i, pid in enumerate(self.meta["pair_id"].tolist())}
        self._areas: list[SceneArea] | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def has_pair(self, pair_id: str) -> bool:
        """Whether the archive holds a pair with this id."""
        return pair_id in self._row

    def pair_ids(self) -> list[str]:
        return self.meta["pair_id"].astype(str).tolist()

    def row_of(self, pair_id: Any) -> int:
        """Store row of a pair id; InputError naming the id when it is not in the archive."""
        if not isinstance(pair_id, str) or not pair_id.strip():
            raise InputError(f"pair_id={pair_id!r}: expected the id of a pair in the archive")
        row = self._row.get(pair_id)
        if row is None:
            raise InputError(f"pair_id={pair_id!r}: no such pair in the archive {self.store.root}")
        return row

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Row mask of the pairs `filters` keep (None: no filter)."""
        if filters is not None and not isinstance(filters, Filters):
            raise InputError(f"filters={filters!r}: expected a SearchFilters")
        return self.masks.mask(filters)

    def hit(self, rank: int, score: float, row: int) -> PairHit:
        """Row `row` as the `rank`-th result of a query."""
        r = self.meta.iloc[row]
        return PairHit(
            rank=rank,
            score=float(score),
            pair_id=str(r["pair_id"]),
            source=str(r["source"]),
            split=plain(r["split"]),
            bounds=_bounds(r),
            dates=(plain(r["date_before"]), plain(r["date_after"])),
            captions=_captions(r),
            change_type=plain(r["change_type"]),
            date_precision=_date_precision(_location(r)),
        )

    def pair(self, pair_id: str) -> dict[str, Any]:
        """Everything the store knows about one pair (metadata row, parsed), as a dict."""
        r = self.meta.iloc[self.row_of(pair_id)]
        rec = {c: plain(r[c]) for c in self.meta.columns}
        rec["captions"] = _captions(r)
        where = f"{self.store.root}: shard {r['shard']}, pair {pair_id!r}"
        rec["location"] = parse_json_field(plain(r["location"]), where, "location") or {}
        rec["change_stats"] = parse_json_field(plain(r["change_stats"]), where, "change_stats")
        rec["bounds"] = _bounds(r)
        rec["native_bounds"] = _bounds(r, "native_")
        rec["dates"] = (rec["date_before"], rec["date_after"])
        rec["date_precision"] = _date_precision(rec["location"])
        return rec

    def thumbnails(self, pair_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(before, after) uint8 RGB thumbnails of a pair."""
        row = self.row_of(pair_id)
        return self.store.thumbnails(str(self.meta.iloc[row]["shard"]), pair_id)

    def change_stats(self, pair_id: str) -> dict[str, float] | None:
        return self.pair(pair_id)["change_stats"]

    def footprints(self, filters: Filters | None = None, *, limit: int | None = None) -> dict:
        """GeoJSON FeatureCollection of the (filtered) pairs' lon/lat footprints."""
        mask = self.mask(filters)
        m = self.masks
        has = ~(np.isnan(m.west) | np.isnan(m.south) | np.isnan(m.east) | np.isnan(m.north))
        rows = np.flatnonzero(has if mask is None else has & mask)
        if limit is not None:
            rows = rows[: max(int(limit), 0)]
        meta = self.meta
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
                        "date_before": plain(meta.at[i, "date_before"]),
                        "date_after": plain(meta.at[i, "date_after"]),
                        "change_type": plain(meta.at[i, "change_type"]),
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    def stats(self) -> ArchiveStats:
        """Counts by source and split, date range, lon/lat extent and the model card."""
        meta, m = self.meta, self.masks
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
            index=self.index_kind,
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

    def acquisition_dates(self) -> dict[str, int]:
        """ISO date -> number of pairs with an image taken that day (before or after), in date order."""
        dates = pd.concat([self.meta["date_before"], self.meta["date_after"]]).dropna().astype(str)
        counts = dates.str[:10].value_counts()
        return {str(d): int(counts[d]) for d in sorted(counts.index)}

    def scene_areas(self) -> list[SceneArea]:
        """The archive's areas (one per before/after scene pair), largest first, with their map tiles."""
        if self._areas is None:
            self._areas = scene_areas(self.meta, TileIndex.read(self.store.tiles_dir))
        return self._areas

    def tile_size(self, sample: int = 1000) -> int | None:
        """Side (px) of most of the archive's square tiles (from up to `sample` rows' pixel windows),
        or None when no row records one: the size new scenes should be cut into to match."""
        if "location" not in self.meta or len(self) == 0:
            return None
        rows = np.unique(np.linspace(0, len(self) - 1, min(sample, len(self))).astype(int))
        sizes: dict[int, int] = {}
        for text in self.meta["location"].iloc[rows]:
            try:
                window = loads_bounded(text, max_depth=16).get("window") if plain(text) else None
            except (ValueError, AttributeError):
                window = None
            if isinstance(window, list) and len(window) == 4 and window[2] == window[3]:
                sizes[int(window[2])] = sizes.get(int(window[2]), 0) + 1
        return max(sizes, key=sizes.__getitem__) if sizes else None


def _location(r: Any) -> dict:
    """A metadata row's location recipe (empty when absent or unreadable: precision is then unknown)."""
    try:
        loc = loads_bounded(plain(r["location"]) or "{}", max_depth=16)
    except (TypeError, ValueError):
        return {}
    return loc if isinstance(loc, dict) else {}


def _date_precision(location: dict) -> tuple[str | None, str | None]:
    """("year" | "day" | None) for the before and after dates: as recorded at indexing, else read
    again from the GeoTIFF file names (stores built before the precision was recorded)."""
    recorded = location.get("date_precision")
    if isinstance(recorded, list) and len(recorded) == 2:
        return (recorded[0], recorded[1])
    from textitsr.data.scenes import date_precision

    return tuple(  # type: ignore[return-value]
        date_precision(Path(str(location[w])).stem) if isinstance(location.get(w), str) else None
        for w in ("before", "after")
    )
