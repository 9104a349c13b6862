"""On-disk archive store: a manifest plus shards of Parquet metadata, embeddings and thumbnails.

Layout of a store folder::

    manifest.json                 format version, checkpoint_id, embed_dim, dtype, counts, shard list
    shards/<name>/metadata.parquet    one row per pair (ids, split, dates, bounds, captions, stats, ...)
    shards/<name>/pair_embeddings.npy (n, d) float16/float32, L2-normalised
    shards/<name>/thumbnails.parquet  pair_id + before/after PNG bytes (small, for display)
    shards/<name>/captions.parquet    text, pair_id: the archive's captions (for pair -> text)
    shards/<name>/caption_embeddings.npy
    index/<what>-<key>.faiss      cached search indexes of large stores (derived; see `index_file`)
    index/pair-vectors-<key>.npy  the shards' pair embeddings in one memory-mappable file (large stores)
    tiles/index.json, tiles/<key>/{z}/{x}/{y}.webp   map tiles of the scenes (textitsr.index.tiles)

A shard is written into a temporary folder and renamed into place; the manifest is rewritten
atomically *after* that, so it only ever lists complete shards. A build killed midway leaves the
last good store, and a rerun skips the shards the manifest already lists. The manifest is the
truth: a shard folder it does not list is an interrupted write and is ignored (and overwritten).
One shard's files (schema, thumbnails, the atomic write) are in `shards.py`, the manifest's schema
in `manifest.py`, the writer lock in `lock.py`. On open the manifest is checked and every listed
shard's row counts and embedding shapes are compared with it; embeddings are checked finite and
normalised when loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from textitsr.atomic import atomic_dir, atomic_path, atomic_write_text, remove_stale_temps
from textitsr.errors import StoreError
from textitsr.index.lock import writer_lock
from textitsr.index.manifest import DTYPES, FORMAT, FORMAT_VERSION, MANIFEST, check_manifest
from textitsr.index.shards import (
    DEFAULT_THUMB_SIZE,
    METADATA_COLUMNS,
    SHARDS,
    ShardData,
    check_column_types,
    check_embeddings,
    decode_thumbnail,
    metadata_types,
    write_shard,
)
from textitsr.outputs import check_store_out
from textitsr.safe_read import NotRegularFile, read_json_file, regular_file

#: Cached search graphs (derived data: safe to delete, rebuilt on open).
INDEX_DIR = "index"
#: Map tile pyramids of the scenes (see `textitsr.index.tiles`).
TILES = "tiles"


def is_store(root: Path) -> bool:
    """Whether `root` holds a store (a manifest; `read_manifest` then says whether it is a good one)."""
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    """The parsed manifest of the store at `root`, checked against the schema (`check_manifest`)."""
    path = Path(root) / MANIFEST
    if not (path.exists() or path.is_symlink()):
        raise StoreError(f"{path}: no store manifest here; build one with `textitsr index`")
    try:
        manifest = read_json_file(path)
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: corrupt store manifest ({err}); rebuild the store") from err
    check_manifest(manifest, path)
    return manifest


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
        check_store_out(root, what="store folder")
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
    def tiles_dir(self) -> Path:
        """Where the scenes' map tile pyramids live (see `textitsr.index.tiles`)."""
        return self.root / TILES

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
        self._refresh()  # build on the manifest as it is on disk, not as this process last read it
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

    def with_embeddings(
        self, out: Path, pair_embeddings: np.ndarray, *, checkpoint: Path, model: dict[str, Any]
    ) -> Store:
        """A copy of this store at `out` with new pair embeddings (rows in store order) and model.

        For a model whose image side changed but whose text side did not (ANNEAL fine-tunes only
        the pair head): metadata, thumbnails, captions and caption embeddings are copied as they
        are. Cached search graphs are not copied (they would be stale). `model` is the new
        checkpoint's card; its `checkpoint_id` becomes the copy's.
        """
        emb = np.asarray(pair_embeddings)
        if emb.ndim != 2 or len(emb) != len(self) or emb.shape[1] != self.embed_dim:
            raise StoreError(
                f"{self.root}: {len(self)} pairs of {self.embed_dim}-d, new embeddings of shape {emb.shape}"
            )
        check_embeddings(emb, f"{out}: new pair embeddings")
        manifest = dict(self.manifest)
        with writer_lock(Path(out)):
            remove_stale_temps(Path(out).parent, Path(out).name)  # left by a killed earlier copy
            with atomic_dir(Path(out)) as tmp:
                start = 0
                for shard in manifest["shards"]:
                    name, n = shard["name"], int(shard["n_pairs"])
                    # Hard links where the file system allows (the copy's files are never written
                    # in place: a 60 MB archive copies in ms, not seconds); the new embeddings are
                    # left out, so the base store's file is never the one written.
                    shutil.copytree(self.root / SHARDS / name, tmp / SHARDS / name,
                                    copy_function=_link_or_copy,
                                    ignore=shutil.ignore_patterns("pair_embeddings.npy"))
                    rows = emb[start : start + n].astype(manifest["dtype"])
                    np.save(tmp / SHARDS / name / "pair_embeddings.npy", rows)
                    start += n
                manifest.update(checkpoint_id=model["checkpoint_id"], checkpoint=str(checkpoint), model=model)
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return Store.open(out)

    def index_file(self, what: str, key: str, suffix: str = ".faiss") -> Path | None:
        """Where a search graph (or another derived file: `suffix`) of this store built for `key` is
        cached; `what`: pairs, captions, pair-vectors.

        Files cached for other keys (older shard lists or settings) are removed. None when the
        store folder is read-only: the graph is then rebuilt in memory on every open.
        """
        folder = self.root / INDEX_DIR
        try:
            folder.mkdir(exist_ok=True)
        except OSError:
            return None
        name = f"{what}-{key}{suffix}"
        for old in folder.glob(f"{what}-*{suffix}"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return folder / name

    def _shard_file(self, shard: str, name: str) -> Path:
        """A shard's file, provided it is a regular file: a symlink (perhaps out of the store), a FIFO
        (which would block the first read forever) or a device is refused before anything opens it."""
        path = self.root / SHARDS / shard / name
        try:
            return regular_file(path)
        except NotRegularFile as err:
            raise StoreError(f"{err}; rebuild the shard") from err
        except OSError:
            return path  # missing: the reader reports it with the file's name

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
            counts = {"metadata.parquet": s["n_pairs"], "thumbnails.parquet": s["n_pairs"]}
            counts["captions.parquet"] = s["n_captions"]
            for file, rows in counts.items():
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
        """A shard's embeddings (memory-mapped), checked finite and normalised."""
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

    def check_columns(self, shard: str, name: str, expected: dict[str, pa.DataType]) -> None:
        """Raise StoreError unless the shard file's columns have the types the readers rely on."""
        path = self._shard_file(shard, name)
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"{path}: corrupt or missing shard file ({err}); rebuild the shard") from err
        check_column_types(schema, expected, str(path))

    def shard_metadata(self, s: dict[str, Any]) -> pd.DataFrame:
        """The metadata rows of one manifest shard entry, checked against the schema."""
        self.check_columns(s["name"], "metadata.parquet", metadata_types())
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
            frames = [self.shard_metadata(s) for s in self.manifest["shards"]]
            if frames:
                self._metadata = pd.concat(frames, ignore_index=True)
            else:
                self._metadata = pd.DataFrame(
                    {c: pd.Series(dtype=object) for c in (*METADATA_COLUMNS, "shard")}
                )
        return self._metadata

    def pair_embedding_parts(self) -> list[np.ndarray]:
        """Each shard's pair embeddings, memory-mapped in the stored dtype (nothing loaded), in store
        order; every row checked finite and normalised, a block at a time (bounded memory)."""
        parts = []
        for s in self.manifest["shards"]:
            arr = self._read_npy(s["name"], "pair_embeddings.npy", int(s["n_pairs"]))
            parts.append(_fresh_map(arr))  # drop the pages the check read: they would count as resident
        return parts

    def pair_vectors(self, consolidated: Path | None = None) -> np.ndarray:
        """(N, d) pair embeddings as one memory-mapped array in the stored dtype (float16 by default),
        for archives too large to hold as float32 (10M x 256-d: 10 GB); the search tiers that
        re-rank read only their candidates' rows from it.

        One shard is mapped as it is; several are first concatenated (streamed) into `consolidated`,
        a derived file that is reused while its name is unchanged (the caller keys it to the shard
        list). Without a place to write it, the rows are loaded as float32 as `pair_embeddings` does.
        """
        parts = self.pair_embedding_parts()
        if len(parts) == 1:
            return parts[0]
        if consolidated is None:
            return self.pair_embeddings()
        n = sum(len(p) for p in parts)
        dtype = np.dtype(self.manifest["dtype"])
        if consolidated.is_file():
            with contextlib.suppress(OSError, ValueError):
                arr = np.load(consolidated, mmap_mode="r", allow_pickle=False)
                if arr.shape == (n, self.embed_dim) and arr.dtype == dtype:
                    return arr
        with atomic_path(consolidated) as tmp:
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                        "shape": (n, self.embed_dim)}
                )
                for part in parts:
                    for start in range(0, len(part), 65_536):
                        f.write(np.ascontiguousarray(part[start : start + 65_536]).tobytes())
        return np.load(consolidated, mmap_mode="r", allow_pickle=False)

    def pair_embeddings(self) -> np.ndarray:
        """(N, d) float32 pair embeddings in store order, in memory (see `pair_vectors` for large stores)."""
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
        except ValueError as err:
            raise StoreError(
                f"{self._shard_file(shard, 'thumbnails.parquet')}: pair {pair_id!r}: bad thumbnail ({err})"
            ) from err

    def validate(self) -> None:
        """Read everything once, raising StoreError naming the first bad file. Pair embeddings are
        checked a block at a time and not kept (`pair_vectors` / `pair_embeddings` load them)."""
        meta = self.metadata()
        if self._embeddings is None:
            self.pair_embedding_parts()
        self.captions()
        self.caption_embeddings()
        dupes = meta["pair_id"][meta["pair_id"].duplicated()]
        if len(dupes):
            raise StoreError(f"{self.root}: duplicate pair ids across shards, e.g. {dupes.iloc[0]!r}")


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


def _fresh_map(arr: np.ndarray) -> np.ndarray:
    """A new read-only mapping of the file behind memory-mapped `arr` (the old one is released)."""
    if isinstance(arr, np.memmap) and arr.filename:
        return np.load(arr.filename, mmap_mode="r", allow_pickle=False)
    return arr


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


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link `src` to `dst`, or copy it where links are not possible (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
