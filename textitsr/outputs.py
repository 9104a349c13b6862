"""Outputs are never destructive: a folder is written only when it is new, empty, or one textitsr wrote.

Writers replace whole folders (checkpoints, feature caches, worlds, re-embedded stores) or add to
them (stores, ANNEAL workspaces). Before either, the folder must be recognisably this tool's: by the
file each kind of output carries (a store's manifest, a checkpoint's config, a cache's meta, ...) or,
for workspaces, by holding nothing but the entries the tool writes there. Anything else (a folder of
notes, a dataset) is refused with one line naming it, and an output may not be an input or lie
inside one (``train --out DATA --root DATA`` once deleted the dataset).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textitsr.errors import OutputError


@dataclass(frozen=True)
class OutputKind:
    """One kind of folder textitsr writes, and how to recognise one."""

    name: str
    #: A JSON file the folder holds and a test of its content.
    signature: tuple[str, Callable[[dict[str, Any]], bool]] | None = None
    #: Or: glob patterns covering every entry of the folder (workspaces the tool fills over time).
    layout: tuple[str, ...] = ()
    #: Or: files that must all be there (binary outputs without a JSON file of their own).
    files: tuple[str, ...] = ()


def _has(*keys: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: all(k in doc for k in keys)


def _format(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: doc.get("format") == name


STORE = OutputKind("store", ("manifest.json", _format("textitsr-store")))
CHECKPOINT = OutputKind("checkpoint", ("config.json", _has("format_version", "model")))
TRAINING_STATE = OutputKind("training state", ("state.json", _has("state", "model_config")))
#: A training --out before its first checkpoint holds only the resumable state `last/`.
TRAINING_OUT = OutputKind("training output", layout=("last",))
FEATURE_CACHE = OutputKind("feature cache", ("meta.json", _has("with_tokens")))
WORLD = OutputKind("synthetic world", ("world.json", _format("textitsr-synthetic-world")))
ANNEAL_WORKSPACE = OutputKind(
    "ANNEAL workspace", layout=("annotations.jsonl", "features-*.npz", "checkpoints", "store", "search.json")
)
DEMO = OutputKind("demo folder", layout=("world", "model", "store", "annotations", "cache"))
#: An uncommitted shard folder a crashed build left (the resumed build rewrites it).
SHARD = OutputKind("store shard", files=("metadata.parquet", "pair_embeddings.npy"))
KINDS = (STORE, SHARD, CHECKPOINT, TRAINING_STATE, TRAINING_OUT, FEATURE_CACHE, WORLD, ANNEAL_WORKSPACE, DEMO)


def _transient(name: str) -> bool:
    """Temporary names atomic writes leave beside their target (.x.tmp, .x.old) and lock files."""
    return name.startswith(".") or name.endswith(".lock")


def recognise(folder: Path, kinds: Iterable[OutputKind] = KINDS) -> OutputKind | None:
    """The kind of textitsr output `folder` is, or None (also for a missing or unreadable folder)."""
    folder = Path(folder)
    try:
        entries = [p.name for p in folder.iterdir() if not _transient(p.name)]
    except OSError:
        return None
    for kind in kinds:
        if kind.signature is not None:
            name, test = kind.signature
            try:
                doc = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and test(doc):
                return kind
        elif kind.files:
            if all((folder / name).is_file() for name in kind.files):
                return kind
        elif entries and all(any(fnmatch.fnmatchcase(e, pat) for pat in kind.layout) for e in entries):
            return kind
    return None


def is_empty_dir(folder: Path) -> bool:
    try:
        return not any(p for p in Path(folder).iterdir() if not _transient(p.name))
    except OSError:
        return False


def _overlap(out: Path, other: Path) -> bool:
    """True when one path is the other or lies inside it (symlinks resolved)."""
    a, b = out.resolve(), other.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _writable_parent(path: Path, what: str) -> None:
    """Refuse a path whose nearest existing ancestor is not a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: {what}: {parent} is a file, expected a folder to write into")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: {what}: {parent} is not writable")


def check_output_dir(
    out: str | os.PathLike[str],
    kinds: Sequence[OutputKind],
    *,
    what: str = "--out",
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Return `out` when textitsr may write this folder; raise OutputError saying why not otherwise.

    Allowed: a path that does not exist (its parent writable), an empty folder, or a folder
    recognised as one of `kinds`. Refused: a file, any other folder, and a folder equal to, inside,
    or holding one of `inputs`.
    """
    out = Path(out)
    for given in inputs:
        if _overlap(out, Path(given)):
            raise OutputError(
                f"{out}: {what} overlaps the input {given}; choose an output folder outside the data"
            )
    if not out.exists():
        if out.is_symlink():
            raise OutputError(f"{out}: {what} is a dangling symlink; expected a new or empty folder")
        _writable_parent(out, what)
        return out
    if not out.is_dir():
        raise OutputError(f"{out}: {what} is a file; expected a new or empty folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: {what} is not writable")
    if is_empty_dir(out) or recognise(out, kinds) is not None:
        return out
    names = " or ".join(k.name for k in kinds)
    raise OutputError(
        f"{out}: {what} is a folder textitsr did not write (not a {names}); refusing to write into it, "
        "choose a new or empty folder"
    )


def check_output_file(
    out: str | os.PathLike[str], *, what: str = "--out", inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Return `out` when a file may be (re)written there: not a folder, not an input, parent writable."""
    out = Path(out)
    for given in inputs:
        if out.resolve() == Path(given).resolve():
            raise OutputError(f"{out}: {what} is also an input; choose another output file")
    if out.is_dir():
        raise OutputError(f"{out}: {what} is a folder; expected a file name such as {out / 'pairs.parquet'}")
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputError(f"{out}: {what} is not writable")
    _writable_parent(out, what)
    return out
