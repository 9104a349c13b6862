"""A source's pairs as a Parquet catalogue: one row per pair, what `textitsr ingest` writes.

The catalogue is metadata only (no pixels): id, source, split, dates, lon/lat bounds, CRS, captions,
plus the recipe to re-read the pixels (`location`, JSON). It is written through `textitsr.atomic`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from textitsr.atomic import atomic_path
from textitsr.data.pairs import BitemporalPair, PairSource, check_split
from textitsr.errors import InputError

SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("date_before", pa.string()),
        ("date_after", pa.string()),
        ("west", pa.float64()),
        ("south", pa.float64()),
        ("east", pa.float64()),
        ("north", pa.float64()),
        ("crs", pa.string()),
        ("n_captions", pa.int32()),
        ("captions", pa.list_(pa.string())),
        ("changed", pa.bool_()),
        ("change_type", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("bands", pa.string()),
        ("location", pa.string()),
    ],
    metadata={"textitsr": "pair-catalog"},  # what `textitsr.outputs` recognises before overwriting
)


def catalog_row(pair: BitemporalPair) -> dict:
    """The catalogue row of one pair (bounds are lon/lat; None where unknown)."""
    west, south, east, north = pair.bounds if pair.bounds else (None,) * 4
    return {
        "pair_id": pair.pair_id,
        "source": pair.source,
        "split": pair.split,
        "date_before": pair.dates[0],
        "date_after": pair.dates[1],
        "west": west,
        "south": south,
        "east": east,
        "north": north,
        "crs": pair.crs,
        "n_captions": len(pair.captions),
        "captions": list(pair.captions),
        "changed": pair.changed,
        "change_type": pair.change_type,
        "height": int(pair.before.shape[0]),
        "width": int(pair.before.shape[1]),
        "bands": ",".join(pair.bands),
        "location": json.dumps(pair.location, sort_keys=True),
    }


def write_catalog(
    source: PairSource,
    out: Path,
    split: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write one Parquet row per pair of `source` (optionally one split) to `out`; return the row count.

    A source that yields no pairs is an error (nothing to catalogue usually means wrong input).
    """
    check_split(split)
    rows, seen = [], set()
    for pair in source.pairs(split):
        if pair.pair_id in seen:
            raise InputError(f"pair id {pair.pair_id!r} occurs twice in {source.name}; expected unique ids")
        seen.add(pair.pair_id)
        rows.append(catalog_row(pair))
        if progress is not None:
            progress(len(rows))
    if not rows:
        raise InputError(
            f"{source.name} source yielded no pairs"
            + (f" for split {split!r}" if split else "")
            + " (all tiles nodata, or an empty dataset?)"
        )
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return len(rows)
