"""The search pages' filter widgets (area, dates, sources) -> `SearchFilters`, checked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from textitsr.app.footprints import Bounds
from textitsr.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import SearchFilters


def parse_bbox(values: Sequence[float]) -> Bounds:
    """(west, south, east, north) in degrees, checked for order and range."""
    if len(values) != 4:
        raise InputError(f"area: expected 4 numbers west, south, east, north; got {len(values)}")
    w, s, e, n = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InputError("area: the numbers must be finite")
    if not (-180 <= w < e <= 180):
        raise InputError(f"area: expected -180 <= west < east <= 180, got west={w}, east={e}")
    if not (-90 <= s < n <= 90):
        raise InputError(f"area: expected -90 <= south < north <= 90, got south={s}, north={n}")
    return (w, s, e, n)


def make_filters(
    bbox: Sequence[float] | None = None,
    date_range: Sequence[date | str | None] | None = None,
    sources: Sequence[str] | None = None,
) -> SearchFilters | None:
    """SearchFilters from the page's widgets (None when no filter is set)."""
    from textitsr.service import SearchFilters

    box = parse_bbox(bbox) if bbox is not None else None
    date_from = date_to = None
    if date_range:
        parts = [d.isoformat() if isinstance(d, date) else d for d in date_range]
        date_from = parts[0] if len(parts) > 0 else None
        date_to = parts[1] if len(parts) > 1 else None
        if date_from and date_to and date_from > date_to:
            raise InputError(f"date range: from {date_from} is after to {date_to}")
    srcs = tuple(sources) if sources else None
    if box is None and date_from is None and date_to is None and srcs is None:
        return None
    return SearchFilters(bbox=box, date_from=date_from, date_to=date_to, sources=srcs)


def parse_iso_date(text: str | None) -> date | None:
    """The date part of an ISO string, or None when absent/unparseable (archive metadata)."""
    if not text:
        return None
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None
