"""An archive's pairs as GeoParquet, the table geopandas, DuckDB, QGIS and LanceDB read directly.

One row per pair: its lon/lat footprint (``geometry``, WKB, CRS OGC:CRS84, plus a ``bbox`` covering
column so readers without a spatial library can filter by place), both dates, source, split, change
type, captions, the native CRS and the pair's `location` record (JSON: where its pixels come from,
STAC ids and links when it was read from a catalog). A query adds ``rank`` and ``score`` (rows in rank
order); ``embeddings=True`` adds the pair embedding as a fixed-size float32 list.

The file follows GeoParquet 1.1 (https://geoparquet.org): the ``geo`` key of the Parquet metadata
names the primary geometry column, its encoding, geometry types, CRS (PROJJSON), bbox and covering.
A whole store is written shard by shard (memory stays bounded by one shard), to a temporary file
renamed into place. An existing file is replaced only when it is an export textitsr wrote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textitsr.atomic import atomic_path
from textitsr.errors import OutputError, StoreError
from textitsr.index.store import Store
from textitsr.outputs import check_output_file

GEOPARQUET_VERSION = "1.1.0"
#: File names an export may have.
SUFFIXES = (".parquet", ".geoparquet")
#: Key of the Parquet metadata that marks a file as a textitsr export (only those are ever replaced).
EXPORT_KEY = b"textitsr"
EXPORT_FORMAT = "textitsr-geoparquet"
#: The footprints' CRS: longitude/latitude on WGS 84 (GeoParquet's default, written out anyway).
FOOTPRINT_CRS = "OGC:CRS84"


@dataclass(frozen=True)
class Selection:
    """Pairs chosen by a query, best first: their ids and scores (the export keeps this order)."""

    pair_ids: Sequence[str]
    scores: Sequence[float]
    query: str | None = None


def _dates(values: pd.Series) -> pa.Array:
    parsed = pd.to_datetime(values.astype("string").str[:10], format="%Y-%m-%d", errors="coerce")
    return pa.array([None if pd.isna(d) else d.date() for d in parsed], pa.date32())


def _footprints(rows: pd.DataFrame) -> tuple[pa.Array, pa.Array]:
    """(WKB polygons, bbox structs) of the rows' lon/lat bounds; null where a pair has none."""
    import shapely

    bounds = rows[["west", "south", "east", "north"]].to_numpy(dtype=np.float64, na_value=np.nan)
    has = np.isfinite(bounds).all(axis=1)
    wkb: list[bytes | None] = [None] * len(rows)
    if has.any():
        boxes = shapely.box(*bounds[has].T)
        for i, blob in zip(np.flatnonzero(has), shapely.to_wkb(boxes), strict=True):
            wkb[int(i)] = blob
    mask = pa.array(~has)
    bbox = pa.StructArray.from_arrays(
        [pa.array(bounds[:, k], pa.float64(), mask=~has) for k in range(4)],
        names=["xmin", "ymin", "xmax", "ymax"],
        mask=mask,
    )
    return pa.array(wkb, pa.binary()), bbox


def _captions(values: pd.Series) -> tuple[list[list[str]], list[str | None]]:
    lists = [[str(c) for c in v] if v is not None and not isinstance(v, float) else [] for v in values]
    return lists, [c[0] if c else None for c in lists]


def _text(rows: pd.DataFrame, name: str) -> pa.Array:
    """Column `name` as text (null where missing, all null when the rows lack the column)."""
    if name not in rows:
        return pa.nulls(len(rows), pa.string())
    return pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                     for v in rows[name]], pa.string())


def geoparquet_table(
    rows: pd.DataFrame,
    *,
    ranks: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
    embeddings: np.ndarray | None = None,
) -> pa.Table:
    """The export columns of metadata `rows` (the store's schema), without the file's `geo` metadata."""
    rows = rows.reset_index(drop=True)
    geometry, bbox = _footprints(rows)
    captions, first = _captions(rows["captions"])
    cols: dict[str, pa.Array] = {"pair_id": pa.array(rows["pair_id"].astype(str).tolist(), pa.string())}
    if scores is not None:
        cols["rank"] = pa.array(list(ranks or range(1, len(rows) + 1)), pa.int32())
        cols["score"] = pa.array([float(s) for s in scores], pa.float32())
    cols |= {
        "source": _text(rows, "source"),
        "split": _text(rows, "split"),
        "date_before": _dates(rows["date_before"]),
        "date_after": _dates(rows["date_after"]),
        "change_type": _text(rows, "change_type"),
        "caption": pa.array(first, pa.string()),
        "captions": pa.array(captions, pa.list_(pa.string())),
        "crs": _text(rows, "crs"),
        "location": _text(rows, "location"),
    }
    if embeddings is not None:
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    cols["bbox"] = bbox
    cols["geometry"] = geometry
    return pa.table(cols)


def geo_metadata(extent: tuple[float, float, float, float] | None) -> dict[str, Any]:
    """The GeoParquet `geo` metadata of an export whose footprints cover `extent` (None: none have one)."""
    from rasterio.crs import CRS

    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "crs": CRS.from_string(FOOTPRINT_CRS).to_dict(projjson=True),
        "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    if extent is not None:
        column["bbox"] = [float(v) for v in extent]
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


def _extent(rows: pd.DataFrame) -> tuple[float, float, float, float] | None:
    b = rows[["west", "south", "east", "north"]].to_numpy(dtype=np.float64, na_value=np.nan)
    b = b[np.isfinite(b).all(axis=1)]
    if not len(b):
        return None
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def _with_metadata(schema: pa.Schema, extent: tuple[float, float, float, float] | None,
                   query: str | None, store: Store | None) -> pa.Schema:
    info: dict[str, Any] = {"format": EXPORT_FORMAT, "query": query}
    if store is not None:
        info |= {"store": str(store.root), "checkpoint_id": store.checkpoint_id}
    return schema.with_metadata({b"geo": json.dumps(geo_metadata(extent)).encode(),
                                 EXPORT_KEY: json.dumps(info).encode()})


def check_export_path(out: Path, store_root: Path) -> Path:
    """`out` when an export may be written there: a .parquet name outside the store, and either new
    or an earlier export (never a folder, an input, or a Parquet file of another kind)."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise OutputError(f"{out}: expected a GeoParquet file name ending in {' or '.join(SUFFIXES)}")
    root = Path(store_root).resolve()
    if out.resolve().is_relative_to(root):
        raise OutputError(f"{out}: lies inside the store {store_root}; choose a file outside the archive")
    check_output_file(out, inputs=[store_root])
    if out.exists():
        try:
            meta = pq.read_schema(out).metadata or {}
        except (OSError, pa.ArrowException):
            meta = {}
        try:
            ours = json.loads(meta.get(EXPORT_KEY, b"{}")).get("format") == EXPORT_FORMAT
        except (ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(
                f"{out}: exists and is not a GeoParquet export textitsr wrote; refusing to overwrite it, "
                "choose a new file name"
            )
    return out


def _store_tables(store: Store, embeddings: bool) -> Iterator[pa.Table]:
    parts = store.pair_embedding_parts() if embeddings else None
    for i, entry in enumerate(store.manifest["shards"]):
        rows = store.shard_metadata(entry)
        emb = np.asarray(parts[i], dtype=np.float32) if parts is not None else None
        yield geoparquet_table(rows, embeddings=emb)


def _selection_table(store: Store, selection: Selection, embeddings: bool) -> tuple[pd.DataFrame, pa.Table]:
    meta = store.metadata()
    index = {pid: i for i, pid in enumerate(meta["pair_id"].tolist())}
    missing = [p for p in selection.pair_ids if p not in index]
    if missing:
        raise StoreError(f"{store.root}: pairs {missing[:3]} of the selection are not in the store")
    rows = [index[p] for p in selection.pair_ids]
    emb = _embedding_rows(store, rows) if embeddings else None
    picked = meta.iloc[rows]
    return picked, geoparquet_table(picked, scores=selection.scores, embeddings=emb)


def _embedding_rows(store: Store, rows: Sequence[int]) -> np.ndarray:
    """float32 embeddings of store rows `rows` (only those rows read from the memory-mapped shards)."""
    parts = store.pair_embedding_parts()
    starts = np.cumsum([0, *(len(p) for p in parts)])
    out = np.zeros((len(rows), store.embed_dim), dtype=np.float32)
    for k, row in enumerate(rows):
        shard = int(np.searchsorted(starts, row, side="right")) - 1
        out[k] = parts[shard][row - starts[shard]]
    return out


def export_geoparquet(
    store: Store | Path, out: Path, *, embeddings: bool = False, selection: Selection | None = None
) -> int:
    """Write the store's pairs (or a query's `selection`, in rank order) to the GeoParquet file `out`;
    returns the number of rows written."""
    opened = store if isinstance(store, Store) else Store.open(Path(store))
    check_export_path(out, opened.root)
    if selection is not None:
        rows, table = _selection_table(opened, selection, embeddings)
        schema = _with_metadata(table.schema, _extent(rows), selection.query, opened)
        with atomic_path(out) as tmp:
            pq.write_table(table.replace_schema_metadata(schema.metadata), tmp)
        return table.num_rows
    extent = _extent(opened.metadata())
    n = 0
    with atomic_path(out) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for table in _store_tables(opened, embeddings):
                if writer is None:
                    schema = _with_metadata(table.schema, extent, None, opened)
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table.replace_schema_metadata(schema.metadata))
                n += table.num_rows
            if writer is None:  # an empty store: an empty file with the full schema
                empty = geoparquet_table(opened.metadata())
                pq.write_table(empty.replace_schema_metadata(
                    _with_metadata(empty.schema, None, None, opened).metadata), tmp)
        finally:
            if writer is not None:
                writer.close()
    return n


def rows_geoparquet(rows: pd.DataFrame, *, ranks: Sequence[int] | None = None,
                    scores: Sequence[float] | None = None, query: str | None = None) -> bytes:
    """GeoParquet bytes of metadata `rows` (the app's download of a result list)."""
    import io

    table = geoparquet_table(rows, ranks=ranks, scores=scores)
    table = table.replace_schema_metadata(_with_metadata(table.schema, _extent(rows), query, None).metadata)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
