"""Search results as files to take away: CSV (one row per pair), GeoJSON (footprints + scores, for a
small selection) and GeoParquet (the archive's whole records, for geopandas, DuckDB or QGIS)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from textitsr.app.footprints import box_polygon

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import PairHit, SearchService

CSV_FIELDS = ("rank", "score", "pair_id", "source", "split", "date_before", "date_after", "change_type",
              "west", "south", "east", "north", "caption")


def _row(hit: PairHit) -> dict[str, Any]:
    w, s, e, n = hit.bounds or (None, None, None, None)
    return {
        "rank": hit.rank, "score": round(hit.score, 6), "pair_id": hit.pair_id, "source": hit.source,
        "split": hit.split, "date_before": hit.dates[0], "date_after": hit.dates[1],
        "change_type": hit.change_type, "west": w, "south": s, "east": e, "north": n,
        "caption": hit.captions[0] if hit.captions else None,
    }


def hits_csv(hits: Sequence[PairHit], query: str | None = None, filters: Any = None) -> str:
    """One CSV row per result, best first (footprint as west/south/east/north degrees). With `query`,
    every row also says what was searched for and with which filters (JSON), so the file explains
    itself wherever it goes."""
    buf = io.StringIO()
    fields = CSV_FIELDS + (("query", "filters") if query is not None else ())
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    searched = {"query": query, "filters": filters_json(filters)} if query is not None else {}
    for hit in hits:
        writer.writerow({k: "" if v is None else v for k, v in {**_row(hit), **searched}.items()})
    return buf.getvalue()


def filters_json(filters: Any) -> str:
    """Search filters as compact JSON (only those set; "{}" for none)."""
    if filters is None:
        return "{}"
    fields = {k: v for k, v in vars(filters).items() if v is not None}
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}, sort_keys=True)


def hits_geojson(hits: Sequence[PairHit], query: str | None = None, filters: Any = None) -> str:
    """A GeoJSON FeatureCollection of the results' footprints with rank, score and metadata.

    Results without a footprint are kept with a null geometry, so the file lists every result.
    """
    features = []
    for hit in hits:
        props = _row(hit)
        geometry = box_polygon(hit.bounds) if hit.bounds is not None else None
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if query is not None:
        collection["query"] = query
    if filters is not None:
        collection["filters"] = json.loads(filters_json(filters))
    return json.dumps(collection, ensure_ascii=False)


def hits_geoparquet(service: SearchService, hits: Sequence[PairHit], query: str | None = None) -> bytes:
    """GeoParquet bytes of the results, best first: each pair's stored record (footprint, dates,
    captions, where its pixels come from) with rank and score."""
    from textitsr.index.export import rows_geoparquet

    catalog = service.catalog
    rows = catalog.meta.iloc[[catalog.row_of(h.pair_id) for h in hits]]
    return rows_geoparquet(rows, ranks=[h.rank for h in hits], scores=[h.score for h in hits], query=query)
