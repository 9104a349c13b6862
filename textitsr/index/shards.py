"""One shard of a store: its metadata schema, thumbnails, and the atomic write of its files.

A shard folder (`shards/<name>/` under a store, see `store.py` for the whole layout) holds
`metadata.parquet` (one row per pair, `METADATA_COLUMNS`), `pair_embeddings.npy`,
`thumbnails.parquet` (PNG bytes), `captions.parquet` and `caption_embeddings.npy`. `write_shard`
touches only its own folder, so Dask workers call it in parallel; the store's manifest commits it.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from textitsr.atomic import atomic_dir
from textitsr.errors import StoreError
from textitsr.safe_read import ImageTooLarge, decode_rgb, loads_bounded

SHARDS = "shards"

#: Default longest side (px) of stored thumbnails: enough for the inspector, small on disk.
DEFAULT_THUMB_SIZE = 256

#: Columns of metadata.parquet, in order (change_stats is a JSON string or null).
METADATA_COLUMNS = (
    "pair_id",
    "source",
    "split",
    "date_before",
    "date_after",
    "west",
    "south",
    "east",
    "north",
    "crs",
    "native_west",
    "native_south",
    "native_east",
    "native_north",
    "location",
    "captions",
    "change_type",
    "changed",
    "change_stats",
)

SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class ShardData:
    """Everything one shard holds, in memory (a shard is small: built batch by batch)."""

    rows: list[dict[str, Any]]
    pair_embeddings: np.ndarray
    thumbs_before: list[bytes]
    thumbs_after: list[bytes]
    caption_texts: list[str] = field(default_factory=list)
    caption_pair_ids: list[str] = field(default_factory=list)
    caption_embeddings: np.ndarray | None = None
    #: Anything worth recording in the manifest (source spec, slice, ...), JSON-serialisable.
    info: dict[str, Any] = field(default_factory=dict)


def pair_row(pair: Any, change_stats: dict[str, float] | None = None) -> dict[str, Any]:
    """The metadata row of one `BitemporalPair` (everything but pixels)."""
    b = pair.bounds or (None, None, None, None)
    nb = pair.native_bounds or (None, None, None, None)
    return {
        "pair_id": str(pair.pair_id),
        "source": pair.source or "",
        "split": pair.split,
        "date_before": pair.dates[0],
        "date_after": pair.dates[1],
        "west": _f(b[0]),
        "south": _f(b[1]),
        "east": _f(b[2]),
        "north": _f(b[3]),
        "crs": pair.crs,
        "native_west": _f(nb[0]),
        "native_south": _f(nb[1]),
        "native_east": _f(nb[2]),
        "native_north": _f(nb[3]),
        "location": json.dumps(pair.location or {}, default=str),
        "captions": [str(c) for c in pair.captions],
        "change_type": pair.change_type,
        "changed": pair.changed,
        "change_stats": json.dumps(change_stats) if change_stats else None,
    }


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def encode_thumbnail(rgb: np.ndarray, size: int = DEFAULT_THUMB_SIZE) -> bytes:
    """PNG bytes of a uint8 RGB image, shrunk so its longest side is at most `size` (never enlarged)."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if max(img.size) > size:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


#: Largest thumbnail accepted when read back (pixels, checked on the declared size before decoding).
MAX_THUMB_PIXELS = 2048 * 2048


def decode_thumbnail(data: Any, max_pixels: int = MAX_THUMB_PIXELS) -> np.ndarray:
    """uint8 RGB array of stored PNG bytes; ValueError for anything else (undecodable, or a bomb)."""
    if not isinstance(data, bytes):
        raise ValueError(f"thumbnail of type {type(data).__name__}, expected PNG bytes")
    try:
        return decode_rgb(data, ("PNG",), max_pixels)
    except ImageTooLarge as err:
        raise ValueError(f"thumbnail of {err}") from err
    except ValueError as err:
        raise ValueError(f"undecodable thumbnail ({err})") from err


def _metadata_schema() -> pa.Schema:
    f64, s = pa.float64(), pa.string()
    return pa.schema(
        [
            ("pair_id", s),
            ("source", s),
            ("split", s),
            ("date_before", s),
            ("date_after", s),
            ("west", f64),
            ("south", f64),
            ("east", f64),
            ("north", f64),
            ("crs", s),
            ("native_west", f64),
            ("native_south", f64),
            ("native_east", f64),
            ("native_north", f64),
            ("location", s),
            ("captions", pa.list_(s)),
            ("change_type", s),
            ("changed", pa.bool_()),
            ("change_stats", s),
        ]
    )


#: Column types of a shard's other Parquet files.
THUMBNAIL_TYPES = {"pair_id": pa.string(), "before": pa.binary(), "after": pa.binary()}
CAPTION_TYPES = {"text": pa.string(), "pair_id": pa.string()}

_SAME_KIND = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary(),
              pa.large_list(pa.string()): pa.list_(pa.string())}


def metadata_types() -> dict[str, pa.DataType]:
    return {f.name: f.type for f in _metadata_schema()}


def check_column_types(schema: pa.Schema, expected: dict[str, pa.DataType], where: str) -> None:
    """Raise StoreError naming the first column missing or of another type than `expected`.

    An all-null column (type null) passes: every column but the ids may be empty.
    """
    for name, want in expected.items():
        if name not in schema.names:
            raise StoreError(f"{where}: no column {name!r}; rebuild the shard")
        got = schema.field(name).type
        if isinstance(got, (pa.ListType, pa.LargeListType)) and got.value_type == pa.large_string():
            got = pa.list_(pa.string())
        got = _SAME_KIND.get(got, got)
        if got != want and not (got == pa.null() and name != "pair_id"):
            raise StoreError(f"{where}: column {name!r} is {got}, expected {want}; rebuild the shard")


#: Largest |norm - 1| of a stored embedding row (float16 rounding stays well inside it).
NORM_TOLERANCE = 1e-2


def check_embeddings(emb: np.ndarray, where: str) -> None:
    """Raise StoreError unless every row of `emb` is finite and L2-normalised.

    Search scores are dot products: a NaN row silently drops out of the results and a row scaled
    by 1000 ranks first for every query, so both are refused wherever embeddings are read or written.
    """
    if emb.size == 0:
        return
    for start in range(0, emb.shape[0], 65536):  # bounded memory on large memory-mapped shards
        block = np.asarray(emb[start : start + 65536], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise StoreError(f"{where}: embedding row {row} is not finite (NaN or inf); rebuild the shard")
        norms = np.linalg.norm(block, axis=1)
        bad = np.abs(norms - 1.0) > NORM_TOLERANCE
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise StoreError(
                f"{where}: embedding row {start + row} has L2 norm {norms[row]:.4g}, expected 1 "
                "(normalised); rebuild the shard"
            )


def parse_json_field(text: Any, where: str, field_name: str) -> Any:
    """A JSON-encoded metadata field (`location`, `change_stats`); null/empty gives None."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text == "":
        return None
    try:
        return loads_bounded(text, max_depth=16)
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"{where}: field {field_name!r} is not valid JSON ({err}); rebuild the shard"
        ) from err


def write_shard(root: Path, name: str, data: ShardData, dtype: str = "float16") -> dict[str, Any]:
    """Write one shard folder atomically under `root/shards/` and return its manifest entry.

    Safe to call from Dask workers: it touches only its own shard folder, never the manifest.
    """
    if not SHARD_NAME.match(name):
        raise StoreError(f"shard name {name!r}: expected letters, digits, '_', '-', '.'")
    n = len(data.rows)
    emb = np.asarray(data.pair_embeddings)
    if emb.ndim != 2 or emb.shape[0] != n or len(data.thumbs_before) != n or len(data.thumbs_after) != n:
        raise StoreError(
            f"shard {name!r}: {n} metadata rows but embeddings {emb.shape}, "
            f"{len(data.thumbs_before)}/{len(data.thumbs_after)} thumbnails; expected one each per pair"
        )
    cap_emb = data.caption_embeddings
    if cap_emb is None:
        cap_emb = np.zeros((0, emb.shape[1]), dtype=np.float32)
    if cap_emb.shape[0] != len(data.caption_texts) or len(data.caption_texts) != len(data.caption_pair_ids):
        raise StoreError(f"shard {name!r}: caption texts, pair ids and embeddings differ in length")
    check_embeddings(emb, f"shard {name!r} pair embeddings")
    check_embeddings(cap_emb, f"shard {name!r} caption embeddings")
    ids = [r["pair_id"] for r in data.rows]
    with atomic_dir(Path(root) / SHARDS / name) as tmp:
        table = pa.Table.from_pylist(data.rows, schema=_metadata_schema())
        pq.write_table(table, tmp / "metadata.parquet")
        np.save(tmp / "pair_embeddings.npy", emb.astype(dtype))
        thumbs = pa.table(
            {
                "pair_id": pa.array(ids, pa.string()),
                "before": pa.array(data.thumbs_before, pa.binary()),
                "after": pa.array(data.thumbs_after, pa.binary()),
            }
        )
        pq.write_table(thumbs, tmp / "thumbnails.parquet", compression="none")
        caps = pa.table(
            {
                "text": pa.array(data.caption_texts, pa.string()),
                "pair_id": pa.array(data.caption_pair_ids, pa.string()),
            }
        )
        pq.write_table(caps, tmp / "captions.parquet")
        np.save(tmp / "caption_embeddings.npy", cap_emb.astype(dtype))
    return {"name": name, "n_pairs": n, "n_captions": len(data.caption_texts), **data.info}
