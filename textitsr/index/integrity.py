"""A full check of a store: every file of every shard read once, every problem reported.

`textitsr check STORE` prints what `check_store` finds, one line each. Opening a store already
checks the manifest (its totals against the shards'), that every shard file is a regular file
inside the store, and the shards' row counts and shapes; this also reads the embeddings (finite,
normalised), checks every column's type, decodes every thumbnail (bounded in pixels), and checks
each caption belongs to a pair of its shard and the JSON fields of every metadata row parse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textitsr.errors import StoreError
from textitsr.index.shards import CAPTION_TYPES, THUMBNAIL_TYPES, decode_thumbnail, parse_json_field
from textitsr.index.store import Store


def store_problems(store: Store) -> list[str]:
    """Everything wrong with `store`'s shards, one line each (empty when it is sound)."""
    found: list[str] = []
    owner: dict[str, str] = {}
    for s in store.manifest["shards"]:
        name = s["name"]
        try:
            meta = store.shard_metadata(s)
        except StoreError as err:
            found.append(str(err))
            meta = None
        if meta is not None:
            path = store.root / "shards" / name / "metadata.parquet"
            for pid, location, stats in zip(
                meta["pair_id"], meta["location"], meta["change_stats"], strict=True
            ):
                for field_name, text in (("location", location), ("change_stats", stats)):
                    try:
                        parse_json_field(text, f"{path}: pair {pid!r}", field_name)
                    except StoreError as err:
                        found.append(str(err))
                if pid in owner:
                    found.append(f"{path}: pair id {pid!r} is also in shard {owner[pid]}")
                owner[pid] = name
        checks: tuple[tuple[Any, tuple[Any, ...]], ...] = (
            (store._read_npy, (name, "pair_embeddings.npy", s["n_pairs"])),
            (store._read_npy, (name, "caption_embeddings.npy", s["n_captions"])),
            (_check_captions, (store, name, meta)),
            (_check_thumbnails, (store, name, meta)),
        )
        for check, args in checks:
            try:
                check(*args)
            except StoreError as err:
                found.append(str(err))
    return found


def _check_captions(store: Store, shard: str, meta: Any) -> None:
    store.check_columns(shard, "captions.parquet", CAPTION_TYPES)
    table = store._read_parquet(shard, "captions.parquet")
    if meta is not None:
        strays = set(table["pair_id"].dropna()) - set(meta["pair_id"])
        if strays:
            path = store.root / "shards" / shard / "captions.parquet"
            raise StoreError(f"{path}: {len(strays)} caption(s) of pairs not in the shard, "
                             f"e.g. {sorted(strays)[0]!r}; rebuild the shard")


def _check_thumbnails(store: Store, shard: str, meta: Any) -> None:
    path = store.root / "shards" / shard / "thumbnails.parquet"
    store.check_columns(shard, "thumbnails.parquet", THUMBNAIL_TYPES)
    table = store._read_parquet(shard, "thumbnails.parquet")
    if meta is not None and list(table["pair_id"]) != list(meta["pair_id"]):
        raise StoreError(f"{path}: pair ids differ from metadata's")
    for pid, before, after in zip(table["pair_id"], table["before"], table["after"], strict=True):
        for when, data in (("before", before), ("after", after)):
            try:
                decode_thumbnail(data)
            except ValueError as err:
                raise StoreError(f"{path}: pair {pid!r} {when} thumbnail: {err}; rebuild the shard") from err


def check_store(root: Path) -> list[str]:
    """Everything wrong with the store at `root`, one line each; an empty list means it is sound."""
    try:
        return store_problems(Store.open(root))
    except StoreError as err:
        return [str(err)]
