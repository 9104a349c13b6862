"""Where pairs lie relative to one another: the same place at other dates, or somewhere else.

A *place* is a footprint. Every pair cut from one tile of a time series has exactly that tile's
footprint (the series' common grid), whatever its dates, so "the same place" is a footprint that
covers nearly the same ground (intersection over union >= `SAME_PLACE_IOU`); "elsewhere" is a
footprint that shares no ground with the query's (tiles that only touch along an edge count as
elsewhere). Pairs without a footprint are never at a place and always elsewhere.
"""

from __future__ import annotations

import numpy as np

from textitsr.data.pairs import Bounds
from textitsr.index.search import FilterMasks

#: Footprints overlapping by at least this intersection over union are one place.
SAME_PLACE_IOU = 0.9
#: Overlaps thinner than this share of the query's width or height are an edge, not shared ground.
EDGE_TOLERANCE = 0.01


def _overlap(masks: FilterMasks, bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) of each row's footprint intersected with `bounds` (NaN where a row has none)."""
    w, s, e, n = (float(v) for v in bounds)
    with np.errstate(invalid="ignore"):
        width = np.minimum(masks.east, e) - np.maximum(masks.west, w)
        height = np.minimum(masks.north, n) - np.maximum(masks.south, s)
    return width, height


def overlapping(masks: FilterMasks, bounds: Bounds) -> np.ndarray:
    """Rows whose footprint shares ground with `bounds` (more than an edge)."""
    w, s, e, n = (float(v) for v in bounds)
    width, height = _overlap(masks, bounds)
    with np.errstate(invalid="ignore"):
        return (width > EDGE_TOLERANCE * (e - w)) & (height > EDGE_TOLERANCE * (n - s))


def same_place(masks: FilterMasks, bounds: Bounds, min_iou: float = SAME_PLACE_IOU) -> np.ndarray:
    """Rows whose footprint covers nearly the same ground as `bounds` (intersection over union)."""
    w, s, e, n = (float(v) for v in bounds)
    width, height = _overlap(masks, bounds)
    with np.errstate(invalid="ignore"):
        inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
        areas = (masks.east - masks.west) * (masks.north - masks.south)
        union = areas + (e - w) * (n - s) - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        return np.nan_to_num(iou, nan=0.0) >= min_iou


def date_order(masks: FilterMasks, rows: np.ndarray) -> np.ndarray:
    """`rows` sorted by (after date, before date): a place's pairs in the order their changes happened."""
    before = masks.date_before[rows].astype("datetime64[D]").astype(np.int64)
    after = masks.date_after[rows].astype("datetime64[D]").astype(np.int64)
    return rows[np.lexsort((before, after))]
