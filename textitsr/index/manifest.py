"""The store manifest's schema: what `read_manifest` accepts before anything in it is used.

The manifest is data from disk (possibly edited by hand, damaged or hostile): types of every field
the code reads, shard names confined to the store's `shards/` folder, and integer counts are
checked here, so a bad manifest is one StoreError naming the field instead of a TypeError, a
KeyError, or a read outside the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textitsr.errors import StoreError
from textitsr.index.shards import SHARD_NAME, SHARDS

FORMAT = "textitsr-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")


def _field(path: Path, key: str, value: Any, expected: str) -> StoreError:
    return StoreError(f"{path}: field {key!r} is {value!r}, expected {expected}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: Any, path: Path) -> None:
    """Raise StoreError naming the first field of `manifest` (read from `path`) that breaks the schema.

    Types of every field the code reads, shard names that stay inside `shards/` (no separators,
    no `..`, no absolute paths, no symlinks out of the store), unique shard names, counts that are
    integers. A manifest is data from disk: nothing in it is trusted before this passes.
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
    for key in ("n_pairs", "n_captions"):
        if key in manifest and not _count(manifest[key]):
            raise _field(path, key, manifest[key], "a count (integer >= 0)")
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
        if not isinstance(name, str) or not SHARD_NAME.match(name):
            raise _field(path, f"{where}.name", name, "letters, digits, '_', '-', '.' (a folder in shards/)")
        try:
            inside = (path.parent / SHARDS / name).resolve().is_relative_to(shard_root)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            inside = False
        if not inside:
            raise _field(path, f"{where}.name", name, "a shard folder inside the store (it links outside)")
        if name in seen:
            raise _field(path, f"{where}.name", name, "a name used once")
        seen.add(name)
        for key in ("n_pairs", "n_captions"):
            if not _count(shard.get(key)):
                raise _field(path, f"{where}.{key}", shard.get(key), "a count (integer >= 0)")
    for key in ("n_pairs", "n_captions"):  # /health, /stats and `check` report these totals
        total = sum(int(s[key]) for s in shards)
        if key in manifest and manifest[key] != total:
            raise _field(path, key, manifest[key], f"{total}, the sum over its shards")
