"""Outputs are never destructive: one rule, checked at the start of every command that writes.

An output is new, empty (nothing at all in it: a folder holding only `.git`, `.env` or a lock file
is not empty), or something this tool wrote and recognises: a folder by the file each kind carries
(a store's manifest, a checkpoint's config, a cache's meta, ...) or, for workspaces the tool fills
over time, by holding only the entries the tool writes there (each of them recognised in turn); a
file by its content (a catalogue is a Parquet file textitsr wrote, never a GeoTIFF of the same
name). An output is never an input and never lies inside or around one (``train --out DATA --root
DATA`` once deleted the dataset). Anything else is refused with one line naming it, before any work.

Each kind of output has one function here (`check_store_out`, `check_checkpoint_out`, ...); every
command calls the one for its output first.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textitsr.errors import OutputError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class OutputKind:
    """One kind of folder textitsr writes, and how to recognise one."""

    name: str
    #: A JSON file the folder holds and a test of its content.
    signature: tuple[str, Callable[[dict[str, Any]], bool]] | None = None
    #: Or: (glob pattern, kinds) covering every entry of the folder (workspaces the tool fills over
    #: time). An entry matching a pattern with kinds must be an empty folder or one of those kinds.
    layout: tuple[tuple[str, tuple[OutputKind, ...]], ...] = ()
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
TRAINING_OUT = OutputKind("training output", layout=(("last", (TRAINING_STATE,)),))
FEATURE_CACHE = OutputKind("feature cache", ("meta.json", _has("with_tokens")))
WORLD = OutputKind("synthetic world", ("world.json", _format("textitsr-synthetic-world")))
#: `checkpoints/` of a workspace: one fine-tuned checkpoint per round.
ROUND_CHECKPOINTS = OutputKind("round checkpoints", layout=(("round-*", (CHECKPOINT,)),))
ANNEAL_WORKSPACE = OutputKind(
    "ANNEAL workspace",
    layout=(
        ("annotations.jsonl", ()),
        ("features-*.npz", ()),
        ("search.json", ()),
        ("checkpoints", (ROUND_CHECKPOINTS,)),
        ("store", (STORE,)),
    ),
)
DEMO = OutputKind(
    "demo folder",
    layout=(
        ("world", (WORLD,)),
        ("model", (CHECKPOINT, TRAINING_OUT)),
        ("store", (STORE,)),
        ("annotations", (ANNEAL_WORKSPACE,)),
        ("cache", ()),
    ),
)
#: An uncommitted shard folder a crashed build left (the resumed build rewrites it).
SHARD = OutputKind("store shard", files=("metadata.parquet", "pair_embeddings.npy"))
TRAINING_DATA_PART = OutputKind("training data part", files=("part.json",))
TRAINING_DATA_IMAGES = OutputKind(
    "training data images",
    layout=tuple((part, (TRAINING_DATA_PART,)) for part in ("synth", "realpairs", "timeseries", "world")),
)
#: make-training-data's folder: finished (its manifest), or interrupted (parts written so far).
TRAINING_DATA = OutputKind("make-training-data folder", ("manifest.json", _format("textitsr-training-data")))
TRAINING_DATA_PARTIAL = OutputKind(
    "unfinished make-training-data folder",
    layout=(("images", (TRAINING_DATA_IMAGES,)), ("cache", ()), ("LevirCCcaptions.json", ())),
)
#: Augmented views of a real pool folder (`synth.views`).
PAIR_VIEWS = OutputKind("pair views", ("views.json", _format("textitsr-pair-views")))
#: A checkpoint's text side as one ONNX graph (`embedding.query_graph`).
QUERY_GRAPH = OutputKind("query graph", ("query.json", _format("textitsr-query-graph")))
KINDS = (
    STORE, SHARD, CHECKPOINT, TRAINING_STATE, TRAINING_OUT, FEATURE_CACHE, WORLD, ANNEAL_WORKSPACE, DEMO,
    TRAINING_DATA, TRAINING_DATA_PART, TRAINING_DATA_PARTIAL, PAIR_VIEWS, QUERY_GRAPH,
)

#: What atomic writes and the writer lock leave beside an entry `x`: `.x.<random>.tmp`, `.x.<random>.old`
#: and `.x.lock`. Only these are ignored when matching a layout; they never make a folder "empty".
_TRANSIENT = re.compile(r"\.(?P<base>.+?)(\.[^.]+\.(tmp|old)|\.lock)")

_PARQUET_MAGIC = b"PAR1"
#: Columns every pair catalogue has (catalogues written before the schema carried its kind).
_CATALOG_COLUMNS = {"pair_id", "split", "date_before", "date_after", "west", "south", "east", "north"}
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _transient(name: str, layout: Sequence[tuple[str, tuple[OutputKind, ...]]]) -> bool:
    """A temporary or lock entry of an entry the layout allows (crashed or running writes)."""
    m = _TRANSIENT.fullmatch(name)
    return m is not None and any(fnmatch.fnmatchcase(m["base"], pat) for pat, _ in layout)


def _matches_layout(folder: Path, layout: Sequence[tuple[str, tuple[OutputKind, ...]]]) -> bool:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    if not entries:
        return False
    for entry in entries:
        if _transient(entry.name, layout):
            continue
        rule = next((kinds for pat, kinds in layout if fnmatch.fnmatchcase(entry.name, pat)), None)
        if rule is None:
            return False
        if rule and not (
            entry.is_dir() and not entry.is_symlink() and (is_empty_dir(entry) or recognise(entry, rule))
        ):
            return False
    return True


def recognise(folder: PathLike, kinds: Iterable[OutputKind] = KINDS) -> OutputKind | None:
    """The kind of textitsr output `folder` is, or None (also for a missing or unreadable folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for kind in kinds:
        if kind.signature is not None:
            name, test = kind.signature
            try:
                doc = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                continue
            if isinstance(doc, dict) and test(doc):
                return kind
        elif kind.files:
            if all((folder / name).is_file() for name in kind.files):
                return kind
        elif _matches_layout(folder, kind.layout):
            return kind
    return None


def is_empty_dir(folder: PathLike) -> bool:
    """True for a folder with nothing at all in it (hidden files and lock files count)."""
    try:
        return not any(True for _ in Path(folder).iterdir())
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


def _not_an_input(out: Path, what: str, inputs: Iterable[PathLike | None]) -> None:
    for given in inputs:
        if given is not None and _overlap(out, Path(given)):
            raise OutputError(
                f"{out}: {what} overlaps the input {given}; choose an output outside the data"
            )


def check_output_dir(
    out: PathLike,
    kinds: Sequence[OutputKind],
    *,
    what: str = "--out",
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Return `out` when textitsr may write this folder; raise OutputError saying why not otherwise.

    Allowed: a path that does not exist (its parent writable), an empty folder, or a folder
    recognised as one of `kinds`. Refused: a file, any other folder, and a folder equal to, inside,
    or holding one of `inputs`.
    """
    out = Path(out)
    _not_an_input(out, what, inputs)
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
    out: PathLike,
    *,
    what: str = "--out",
    inputs: Iterable[PathLike | None] = (),
    recognised: Callable[[Path], bool] | None = None,
    kind: str = "file",
) -> Path:
    """Return `out` when a file may be (re)written there: not a folder, not an input nor inside an
    input folder, parent writable, and, when it exists, `recognised` by its content as the same kind."""
    out = Path(out)
    for given in inputs:
        if given is None:
            continue
        if out.resolve() == Path(given).resolve():
            raise OutputError(f"{out}: {what} is also an input; choose another output file")
        if Path(given).is_dir() and out.resolve().is_relative_to(Path(given).resolve()):
            raise OutputError(f"{out}: {what} lies inside the input {given}; choose a file outside the data")
    if out.is_dir():
        raise OutputError(f"{out}: {what} is a folder; expected a file name such as {out / 'pairs.parquet'}")
    _writable_parent(out, what)
    if out.exists() or out.is_symlink():
        if not out.is_file() or out.is_symlink():
            raise OutputError(f"{out}: {what} exists and is not a regular file; refusing to replace it")
        if not os.access(out, os.W_OK):
            raise OutputError(f"{out}: {what} is not writable")
        if recognised is not None and out.stat().st_size and not recognised(out):  # empty: nothing lost
            raise OutputError(
                f"{out}: {what} exists and is not a {kind} textitsr wrote ({_describe(out)}); refusing to "
                "overwrite it, choose a new file name"
            )
    return out


def _describe(path: Path) -> str:
    """What a file looks like from its first bytes, for a refusal message."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return "unreadable"
    if head in _TIFF_MAGICS:
        return "it is a TIFF image"
    if head == _PARQUET_MAGIC:
        return "it is another Parquet file"
    return "unknown content"


# ------------------------------------------------------------------ one check per kind of output
def _is_catalog(path: Path) -> bool:
    """A Parquet file (magic at both ends) whose schema is a pair catalogue's."""
    try:
        with path.open("rb") as fh:
            if fh.read(4) != _PARQUET_MAGIC:
                return False
            fh.seek(-4, os.SEEK_END)
            if fh.read(4) != _PARQUET_MAGIC:
                return False
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    except (OSError, ValueError, ImportError):
        return False
    except Exception:  # noqa: BLE001 - pyarrow raises its own errors for a damaged footer
        return False
    meta = schema.metadata or {}
    return meta.get(b"textitsr") == b"pair-catalog" or _CATALOG_COLUMNS <= set(schema.names)


def check_catalog_out(out: PathLike, inputs: Iterable[PathLike | None] = ()) -> Path:
    """`ingest --out`: a new file, or a pair catalogue (Parquet) this tool wrote; never an input."""
    return check_output_file(out, inputs=inputs, recognised=_is_catalog, kind="pair catalogue (Parquet)")


def check_store_out(out: PathLike, inputs: Iterable[PathLike | None] = (), what: str = "--out") -> Path:
    """`index --out`: a new or empty folder, or a store (it is extended)."""
    return check_output_dir(out, (STORE,), what=what, inputs=inputs)


def check_checkpoint_out(out: PathLike, inputs: Iterable[PathLike | None] = (), what: str = "--out") -> Path:
    """`train --out`, `train-default --out`: a new or empty folder, a checkpoint, or a training output
    holding only the resumable state `last/` (a folder named `last` of anything else is refused)."""
    return check_output_dir(out, (CHECKPOINT, TRAINING_OUT), what=what, inputs=inputs)


def check_world_out(out: PathLike, what: str = "--out") -> Path:
    """`demo-data --out`: a new or empty folder, or a synthetic world (replaced)."""
    return check_output_dir(out, (WORLD,), what=what)


def check_workspace_out(out: PathLike, store: PathLike | None, what: str = "--out") -> Path:
    """`annotate --out`: a new or empty folder, or an ANNEAL workspace; never inside the store."""
    return check_output_dir(out, (ANNEAL_WORKSPACE,), what=what, inputs=[store])


def check_training_data_out(out: PathLike, shared: PathLike | None, what: str = "--out") -> Path:
    """`make-training-data --out`: a new or empty folder, a finished training data folder, or one an
    interrupted run left (only `images/<part>/` folders with their part.json); never in `shared`."""
    return check_output_dir(out, (TRAINING_DATA, TRAINING_DATA_PARTIAL), what=what, inputs=[shared])


def check_demo_out(root: PathLike, what: str = "demo folder") -> Path:
    """`demo --root`: a new or empty folder, or a demo folder (world, model, store, ... only)."""
    return check_output_dir(root, (DEMO,), what=what)
