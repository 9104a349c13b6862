"""On-disk archive store: a manifest plus shards of Parquet metadata, embeddings and thumbnails.

Layout of a store folder::

    manifest.json                 format version, checkpoint_id, embed_dim, dtype, counts, shard list
    shards/<name>/metadata.parquet    one row per pair (ids, split, dates, bounds, captions, stats, ...)
    shards/<name>/pair_embeddings.npy (n, d) float16/float32, L2-normalised
    shards/<name>/thumbnails.parquet  pair_id + before/after PNG bytes (small, for display)
    shards/<name>/captions.parquet    text, pair_id: the archive's captions (for pair -> text)
    shards/<name>/caption_embeddings.npy

A shard is written into a temporary folder and renamed into place; the manifest is rewritten
atomically *after* that, so it only ever lists complete shards. A build killed midway leaves the
last good store, and a rerun skips the shards the manifest already lists. The manifest is the
truth: a shard folder it does not list is an interrupted write and is ignored (and overwritten).

One writer at a time: builds and re-embedded copies hold `writer_lock` (a lock file beside the
store folder, so it survives the folder being swapped); a second writer waits, then fails with
StoreLockedError. Readers never take the lock: they see the manifest before or after a commit.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout
from PIL import Image

from textitsr.atomic import atomic_dir, atomic_write_text
from textitsr.errors import StoreError, StoreLockedError
from textitsr.outputs import STORE, check_output_dir

FORMAT = "textitsr-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
DTYPES = ("float16", "float32")

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

_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Seconds a second writer waits for a store's lock before giving up with StoreLockedError.
WRITER_WAIT_S = 600.0


def lock_path(root: Path) -> Path:
    """The writer lock file of the store at `root`: beside it, never inside the folder it guards."""
    root = Path(root).absolute()
    return root.parent / f".{root.name}.lock"


@contextlib.contextmanager
def writer_lock(root: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the store's writer lock for the block (builds, appends, re-embedded copies)."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    wait = WRITER_WAIT_S if timeout is None else timeout
    lock = FileLock(path, timeout=wait)
    try:
        lock.acquire()
    except Timeout as err:
        raise StoreLockedError(
            f"{root}: another process is writing this store (lock {path} still held after {wait:g} s); "
            "run again when it has finished"
        ) from err
    try:
        yield
    finally:
        lock.release()


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


def decode_thumbnail(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


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


def write_shard(root: Path, name: str, data: ShardData, dtype: str = "float16") -> dict[str, Any]:
    """Write one shard folder atomically under `root/shards/` and return its manifest entry.

    Safe to call from Dask workers: it touches only its own shard folder, never the manifest.
    """
    if not _SHARD_NAME.match(name):
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


def read_manifest(root: Path) -> dict[str, Any]:
    """The parsed manifest of the store at `root`, checked against the schema (see `check_manifest`)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise StoreError(f"{path}: no store manifest here; build one with `textitsr index`")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: corrupt store manifest ({err}); rebuild the store") from err
    check_manifest(manifest, path)
    return manifest


def _field(path: Path, key: str, value: Any, expected: str) -> StoreError:
    return StoreError(f"{path}: field {key!r} is {value!r}, expected {expected}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: Any, path: Path) -> None:
    """Raise StoreError naming the first field of `manifest` (read from `path`) that breaks the schema.

    Types of every field the code reads, shard names that stay inside `shards/` (no separators,
    no `..`, no absolute paths, no symlinks out of the store), unique shard names, and totals that
    add up. A manifest is data from disk: nothing in it is trusted before this passes.
    """
    required = ("format", "version", "checkpoint_id", "embed_dim", "dtype", "shards")
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or any(k not in manifest for k in required)
    ):
        raise StoreError(f"{path}: not a textitsr store manifest (expected keys {', '.join(required)})")
    if manifest["version"] != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {manifest['version']!r}, this textitsr reads {FORMAT_VERSION}; "
            "rebuild the store"
        )
    if not isinstance(manifest["checkpoint_id"], str) or not manifest["checkpoint_id"]:
        raise _field(path, "checkpoint_id", manifest["checkpoint_id"], "a non-empty string")
    if manifest.get("checkpoint") is not None and not isinstance(manifest["checkpoint"], str):
        raise _field(path, "checkpoint", manifest["checkpoint"], "a path string or null")
    if not _count(manifest["embed_dim"]) or manifest["embed_dim"] < 1:
        raise _field(path, "embed_dim", manifest["embed_dim"], "a positive integer")
    if manifest["dtype"] not in DTYPES:
        raise _field(path, "dtype", manifest["dtype"], f"one of {DTYPES}")
    if not isinstance(manifest.get("model", {}), dict):
        raise _field(path, "model", manifest["model"], "an object")
    if "thumb_size" in manifest and (not _count(manifest["thumb_size"]) or manifest["thumb_size"] < 1):
        raise _field(path, "thumb_size", manifest["thumb_size"], "a positive integer")
    shards = manifest["shards"]
    if not isinstance(shards, list):
        raise _field(path, "shards", type(shards).__name__, "a list")
    shard_root = (path.parent / SHARDS).resolve()
    seen: set[str] = set()
    for i, shard in enumerate(shards):
        where = f"shards[{i}]"
        if not isinstance(shard, dict):
            raise _field(path, where, shard, "an object with name, n_pairs, n_captions")
        name = shard.get("name")
        if not isinstance(name, str) or not _SHARD_NAME.match(name):
            raise _field(path, f"{where}.name", name, "letters, digits, '_', '-', '.' (a folder in shards/)")
        if not (path.parent / SHARDS / name).resolve().is_relative_to(shard_root):
            raise _field(path, f"{where}.name", name, "a shard folder inside the store (it links outside)")
        if name in seen:
            raise _field(path, f"{where}.name", name, "a name used once")
        seen.add(name)
        for key in ("n_pairs", "n_captions"):
            if not _count(shard.get(key)):
                raise _field(path, f"{where}.{key}", shard.get(key), "a count (integer >= 0)")
    for key, part in (("n_pairs", "n_pairs"), ("n_captions", "n_captions")):
        total = sum(s[part] for s in shards)
        if key in manifest and manifest[key] != total:
            raise _field(path, key, manifest[key], f"{total}, the sum over its shards")


class Store:
    """A store folder opened for reading and appending. Loaded data is cached on the instance."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self._metadata: pd.DataFrame | None = None
        self._embeddings: np.ndarray | None = None
        self._captions: pd.DataFrame | None = None
        self._caption_embeddings: np.ndarray | None = None
        self._thumbs: dict[str, pd.DataFrame] = {}
        self._ids: set[str] | None = None

    # ------------------------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        root: Path,
        *,
        checkpoint_id: str,
        embed_dim: int,
        dtype: str = "float16",
        checkpoint: str | None = None,
        model: dict[str, Any] | None = None,
        thumb_size: int = DEFAULT_THUMB_SIZE,
    ) -> Store:
        """Open `root` for building: a new empty store, or the existing one when it matches.

        An existing store built with another checkpoint or embedding size is refused rather than
        mixed: vectors from two models are not comparable.
        """
        root = Path(root)
        if dtype not in DTYPES:
            raise StoreError(f"store dtype {dtype!r}: expected one of {DTYPES}")
        if (root / MANIFEST).exists():
            store = cls.open(root, checkpoint_id=checkpoint_id)
            if int(store.manifest["embed_dim"]) != int(embed_dim):
                raise StoreError(
                    f"{root}: store holds {store.manifest['embed_dim']}-d embeddings, "
                    f"model gives {embed_dim}-d"
                )
            return store
        check_output_dir(root, (STORE,), what="store folder")
        now = _now()
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "checkpoint_id": checkpoint_id,
            "checkpoint": checkpoint,
            "model": model or {},
            "embed_dim": int(embed_dim),
            "dtype": dtype,
            "thumb_size": int(thumb_size),
            "n_pairs": 0,
            "n_captions": 0,
            "shards": [],
            "created": now,
            "updated": now,
        }
        atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2))
        return cls(root, manifest)

    @classmethod
    def open(cls, root: Path, *, checkpoint_id: str | None = None, allow_other_model: bool = False) -> Store:
        """Open an existing store; refuse it when built with another checkpoint than `checkpoint_id`."""
        root = Path(root)
        if not root.is_dir():
            raise StoreError(f"{root}: store folder not found")
        manifest = read_manifest(root)
        if checkpoint_id is not None and manifest["checkpoint_id"] != checkpoint_id and not allow_other_model:
            raise StoreError(
                f"{root}: store was built with model checkpoint {manifest['checkpoint_id']}, but the loaded "
                f"model is {checkpoint_id}; its embeddings are not comparable. Rebuild the store with "
                "`textitsr index` for this checkpoint (or re-embed it)."
            )
        store = cls(root, manifest)
        store.check_files()
        return store

    @property
    def checkpoint_id(self) -> str:
        return self.manifest["checkpoint_id"]

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["shards"]]

    def has_shard(self, name: str) -> bool:
        return name in self.shard_names

    def __len__(self) -> int:
        return int(self.manifest.get("n_pairs", 0))

    def pair_ids(self) -> set[str]:
        """Ids of all committed pairs (reads only the id column of each shard)."""
        if self._ids is None:
            ids: set[str] = set()
            for s in self.manifest["shards"]:
                ids.update(self._read_parquet(s["name"], "metadata.parquet", ["pair_id"])["pair_id"])
            self._ids = ids
        return self._ids

    def commit(self, entries: Sequence[dict[str, Any]]) -> None:
        """Add written shards to the manifest (atomically); only then are they part of the store.

        A shard whose pair ids are already in the store is refused (and its folder removed): ids
        must stay unique for lookups by id to mean anything.
        """
        if not entries:
            return
        self._refresh()  # build on the manifest as it is on disk, not as this process last saw it
        names = {e["name"] for e in entries}
        existing = {pid for pid in self.pair_ids()} if not names & set(self.shard_names) else None
        new_ids: set[str] = set()
        for e in entries:
            ids = set(self._read_parquet(e["name"], "metadata.parquet", ["pair_id"])["pair_id"])
            clash = (ids & existing if existing is not None else set()) | (ids & new_ids)
            if clash:
                shutil.rmtree(self.root / SHARDS / e["name"], ignore_errors=True)
                raise StoreError(
                    f"{self.root}: shard {e['name']} repeats {len(clash)} pair id(s) already in the store, "
                    f"e.g. {sorted(clash)[0]!r}; expected new pairs (is this source already indexed?)"
                )
            new_ids |= ids
        shards = [s for s in self.manifest["shards"] if s["name"] not in names]
        shards.extend(entries)
        shards.sort(key=lambda s: s["name"])  # store order is independent of completion order
        manifest = dict(self.manifest, shards=shards, updated=_now())
        manifest["n_pairs"] = sum(int(s["n_pairs"]) for s in shards)
        manifest["n_captions"] = sum(int(s["n_captions"]) for s in shards)
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=2))
        self.manifest = manifest
        if self._ids is not None and existing is not None:
            self._ids |= new_ids
        else:
            self._ids = None
        self._metadata = self._embeddings = self._captions = self._caption_embeddings = None

    def _refresh(self) -> None:
        """Reload the manifest when another writer committed since it was read."""
        current = read_manifest(self.root)
        if current != self.manifest:
            self.manifest = current
            self._ids = None
            self._metadata = self._embeddings = self._captions = self._caption_embeddings = None

    def add_shard(self, name: str, data: ShardData) -> dict[str, Any]:
        """Write one shard and commit it (the local, single-process path)."""
        entry = write_shard(self.root, name, data, dtype=self.manifest["dtype"])
        self.commit([entry])
        return entry

    # -------------------------------------------------------------------------------- reading
    def _shard_file(self, shard: str, name: str) -> Path:
        return self.root / SHARDS / shard / name

    def _read_parquet(self, shard: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        path = self._shard_file(shard, name)
        try:
            return pq.read_table(path, columns=columns).to_pandas()
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"{path}: corrupt or missing shard file ({err}); rebuild the shard") from err

    def check_files(self) -> None:
        """Cheap checks of every listed shard (file footers/headers only): the files are there, with
        the row counts the manifest gives and embeddings of its shape and dtype. Run on open."""
        for s in self.manifest["shards"]:
            name = s["name"]
            for file, rows in (
                ("metadata.parquet", s["n_pairs"]),
                ("thumbnails.parquet", s["n_pairs"]),
                ("captions.parquet", s["n_captions"]),
            ):
                path = self._shard_file(name, file)
                try:
                    found = pq.ParquetFile(path).metadata.num_rows
                except (OSError, pa.ArrowException) as err:
                    raise StoreError(
                        f"{path}: corrupt or missing shard file ({err}); rebuild the shard"
                    ) from err
                if found != rows:
                    raise StoreError(f"{path}: {found} rows, the manifest lists {rows}")
            self._open_npy(name, "pair_embeddings.npy", s["n_pairs"])
            self._open_npy(name, "caption_embeddings.npy", s["n_captions"])

    def _read_npy(self, shard: str, name: str, rows: int) -> np.ndarray:
        """A shard's embeddings, checked finite and normalised (memory-mapped)."""
        arr = self._open_npy(shard, name, rows)
        check_embeddings(arr, str(self._shard_file(shard, name)))
        return arr

    def _open_npy(self, shard: str, name: str, rows: int) -> np.ndarray:
        path = self._shard_file(shard, name)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise StoreError(f"{path}: corrupt or missing shard file ({err}); rebuild the shard") from err
        if arr.ndim != 2 or arr.shape != (rows, self.embed_dim):
            raise StoreError(f"{path}: shape {arr.shape}, expected ({rows}, {self.embed_dim})")
        if arr.dtype != np.dtype(self.manifest["dtype"]):
            raise StoreError(f"{path}: dtype {arr.dtype}, the manifest says {self.manifest['dtype']}")
        return arr

    def _shard_metadata(self, s: dict[str, Any]) -> pd.DataFrame:
        df = self._read_parquet(s["name"], "metadata.parquet")
        path = self._shard_file(s["name"], "metadata.parquet")
        if len(df) != int(s["n_pairs"]) or list(df.columns)[: len(METADATA_COLUMNS)] != list(
            METADATA_COLUMNS
        ):
            raise StoreError(
                f"{path}: {len(df)} rows / columns {list(df.columns)}, manifest expects {s['n_pairs']} rows "
                f"of {list(METADATA_COLUMNS)}"
            )
        if not all(isinstance(p, str) and p for p in df["pair_id"]):
            raise StoreError(f"{path}: column 'pair_id' holds empty or non-text ids; expected one id per row")
        df["shard"] = s["name"]
        return df

    def metadata(self) -> pd.DataFrame:
        """All pairs' metadata rows, in store order, with a `shard` column (row i <-> embedding i)."""
        if self._metadata is None:
            frames = [self._shard_metadata(s) for s in self.manifest["shards"]]
            if frames:
                self._metadata = pd.concat(frames, ignore_index=True)
            else:
                self._metadata = pd.DataFrame(
                    {c: pd.Series(dtype=object) for c in (*METADATA_COLUMNS, "shard")}
                )
        return self._metadata

    def pair_embeddings(self) -> np.ndarray:
        """(N, d) float32 pair embeddings in store order."""
        if self._embeddings is None:
            parts = [
                self._read_npy(s["name"], "pair_embeddings.npy", int(s["n_pairs"]))
                for s in self.manifest["shards"]
            ]
            self._embeddings = _concat(parts, self.embed_dim)
        return self._embeddings

    def captions(self) -> pd.DataFrame:
        """All caption rows (text, pair_id), in the order of `caption_embeddings()`."""
        if self._captions is None:
            frames = []
            for s in self.manifest["shards"]:
                df = self._read_parquet(s["name"], "captions.parquet")
                if len(df) != int(s["n_captions"]):
                    raise StoreError(
                        f"{self._shard_file(s['name'], 'captions.parquet')}: {len(df)} rows, "
                        f"manifest expects {s['n_captions']}"
                    )
                frames.append(df)
            self._captions = (
                pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"text": [], "pair_id": []})
            )
        return self._captions

    def caption_embeddings(self) -> np.ndarray:
        if self._caption_embeddings is None:
            parts = [
                self._read_npy(s["name"], "caption_embeddings.npy", int(s["n_captions"]))
                for s in self.manifest["shards"]
            ]
            self._caption_embeddings = _concat(parts, self.embed_dim)
        return self._caption_embeddings

    def thumbnails(self, shard: str, pair_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (before, after) uint8 RGB thumbnails of one pair of one shard."""
        if shard not in self._thumbs:
            self._thumbs[shard] = self._read_parquet(shard, "thumbnails.parquet").set_index("pair_id")
        table = self._thumbs[shard]
        if pair_id not in table.index:
            raise StoreError(
                f"{self._shard_file(shard, 'thumbnails.parquet')}: no thumbnails for {pair_id!r}"
            )
        row = table.loc[pair_id]
        try:
            return decode_thumbnail(row["before"]), decode_thumbnail(row["after"])
        except OSError as err:
            raise StoreError(
                f"{self._shard_file(shard, 'thumbnails.parquet')}: bad thumbnail ({err})"
            ) from err

    def problems(self) -> list[str]:
        """Everything wrong with the store's shards, one line each (empty when sound): what
        `textitsr check` prints. Reads every file, so it costs a full pass over the store."""
        found: list[str] = []
        ids: dict[str, str] = {}
        for s in self.manifest["shards"]:
            name = s["name"]
            try:
                meta = self._shard_metadata(s)
            except StoreError as err:
                found.append(str(err))
                meta = None
            if meta is not None:
                path = self._shard_file(name, "metadata.parquet")
                for pid, location, stats in zip(
                    meta["pair_id"], meta["location"], meta["change_stats"], strict=True
                ):
                    for field_name, text in (("location", location), ("change_stats", stats)):
                        try:
                            parse_json_field(text, f"{path}: pair {pid!r}", field_name)
                        except StoreError as err:
                            found.append(str(err))
                    if pid in ids:
                        found.append(f"{path}: pair id {pid!r} is also in shard {ids[pid]}")
                    ids[pid] = name
            checks: tuple[tuple[Any, tuple[Any, ...]], ...] = (
                (self._read_npy, (name, "pair_embeddings.npy", s["n_pairs"])),
                (self._read_npy, (name, "caption_embeddings.npy", s["n_captions"])),
                (self._read_parquet, (name, "captions.parquet")),
                (self._check_thumbnails, (name, meta)),
            )
            for check, args in checks:
                try:
                    check(*args)
                except StoreError as err:
                    found.append(str(err))
        return found

    def _check_thumbnails(self, shard: str, meta: pd.DataFrame | None) -> None:
        table = self._read_parquet(shard, "thumbnails.parquet", ["pair_id"])
        if meta is not None and list(table["pair_id"]) != list(meta["pair_id"]):
            raise StoreError(
                f"{self._shard_file(shard, 'thumbnails.parquet')}: pair ids differ from metadata.parquet's"
            )

    def validate(self) -> None:
        """Read everything once, raising StoreError naming the first bad file."""
        meta = self.metadata()
        self.pair_embeddings()
        self.captions()
        self.caption_embeddings()
        dupes = meta["pair_id"][meta["pair_id"].duplicated()]
        if len(dupes):
            raise StoreError(f"{self.root}: duplicate pair ids across shards, e.g. {dupes.iloc[0]!r}")


def parse_json_field(text: Any, where: str, field_name: str) -> Any:
    """A JSON-encoded metadata field (`location`, `change_stats`); null/empty gives None."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text == "":
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"{where}: field {field_name!r} is not valid JSON ({err}); rebuild the shard"
        ) from err


def discard_empty_store(root: Path, remove_folder: bool) -> None:
    """Remove a store this process just created when it committed nothing (a build that failed on its
    first pairs): its manifest, its shards/ folder of unfinished writes, and the folder if we made it."""
    root = Path(root)
    try:
        if read_manifest(root)["shards"]:
            return
    except StoreError:
        return
    shutil.rmtree(root / SHARDS, ignore_errors=True)
    (root / MANIFEST).unlink(missing_ok=True)
    if remove_folder:
        with contextlib.suppress(OSError):
            root.rmdir()  # only when nothing else is in it


def check_store(root: Path) -> list[str]:
    """Everything wrong with the store at `root`, one line each; an empty list means it is sound."""
    try:
        return Store.open(root).problems()
    except StoreError as err:
        return [str(err)]


def _concat(parts: list[np.ndarray], dim: int) -> np.ndarray:
    if not parts:
        return np.zeros((0, dim), dtype=np.float32)
    out = np.empty((sum(p.shape[0] for p in parts), dim), dtype=np.float32)
    i = 0
    for p in parts:
        out[i : i + p.shape[0]] = p
        i += p.shape[0]
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
