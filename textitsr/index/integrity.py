"""A full check of a store: every file of every shard read once, every problem reported.

`textitsr check STORE` prints what `check_store` finds, one line each. Opening a store already
checks the manifest and the shards' row counts and shapes; this also reads the embeddings
(finite, normalised), thumbnails, captions and the JSON fields of every metadata row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textitsr.errors import StoreError
from textitsr.index.shards import parse_json_field
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
            (store._read_parquet, (name, "captions.parquet")),
            (_check_thumbnails, (store, name, meta)),
        )
        for check, args in checks:
            try:
                check(*args)
            except StoreError as err:
                found.append(str(err))
    return found


def _check_thumbnails(store: Store, shard: str, meta: Any) -> None:
    table = store._read_parquet(shard, "thumbnails.parquet", ["pair_id"])
    if meta is not None and list(table["pair_id"]) != list(meta["pair_id"]):
        raise StoreError(
            f"{store.root / 'shards' / shard / 'thumbnails.parquet'}: pair ids differ from metadata's"
        )


def check_store(root: Path) -> list[str]:
    """Everything wrong with the store at `root`, one line each; an empty list means it is sound."""
    try:
        return store_problems(Store.open(root))
    except StoreError as err:
        return [str(err)]
