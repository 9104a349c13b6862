"""Real change pairs with change-type labels, and the query-level scores of the real-data benchmark.

A labelled pairs folder is the folder layout (`before/`, `after/`, `captions.csv`) plus a
`pairs.jsonl` with one `{"name": ..., "change_types": [...]}` per pair (`../shared/data/realdev`).
Labels are multi-label ("buildings_built" and "road_built" together); a pair labelled only "none"
is a no-change pair. The per-type scores rank *all* pairs by one query and report the average
precision against the share of relevant pairs (what a random ranking scores on average).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from textitsr.data.folder import FolderSource, jsonl_objects
from textitsr.data.pairs import BitemporalPair
from textitsr.errors import InputError

NO_CHANGE = "none"
#: Joins the types of a multi-label pair in `BitemporalPair.change_type` (and feature caches).
TYPE_SEPARATOR = "+"


def read_change_types(path: Path) -> dict[str, tuple[str, ...]]:
    """{image file name: change types} from a pairs.jsonl (`name` with or without its suffix)."""
    out: dict[str, tuple[str, ...]] = {}
    for line, obj in jsonl_objects(path):
        types = obj.get("change_types") if isinstance(obj, dict) else None
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("name"), str)
            or not isinstance(types, list)
            or not types
            or not all(isinstance(t, str) and t for t in types)
        ):
            raise InputError(f'{path}:{line}: expected {{"name": "...", "change_types": ["...", ...]}}')
        if NO_CHANGE in types and len(types) > 1:
            raise InputError(f"{path}:{line}: {NO_CHANGE!r} cannot be combined with other change types")
        out[obj["name"]] = tuple(sorted(set(types)))
    return out


def read_listed_captions(path: Path) -> dict[str, tuple[str, ...]]:
    """{name: captions} of the pairs.jsonl records that list `captions` themselves: they serve the
    pairs that captions.csv / captions.jsonl do not caption (a pool folder may carry them only here)."""
    out = {}
    for line, obj in jsonl_objects(path):
        captions = obj.get("captions") if isinstance(obj, dict) else None
        if captions is None:
            continue
        if not isinstance(captions, list) or not all(isinstance(c, str) and c.strip() for c in captions):
            raise InputError(f'{path}:{line}: "captions" must be a list of non-empty strings')
        out[obj["name"]] = tuple(c.strip() for c in captions)
    return out


class LabelledFolderSource(FolderSource):
    """A pairs folder whose pairs carry change types from ROOT/pairs.jsonl (every pair must have one)."""

    name = "labelled-folder"

    def __init__(self, root: Path, labels: str = "pairs.jsonl", **options) -> None:
        super().__init__(root, **options)
        by_name = read_change_types(self.root / labels)
        listed = read_listed_captions(self.root / labels)
        self.files = [
            replace(f, captions=listed.get(f.before.name, listed.get(f.before.stem, ())))
            if not f.captions
            else f
            for f in self.files
        ]
        self.change_types: dict[str, tuple[str, ...]] = {}
        for name in (f.before.name for f in self.files):
            types = by_name.get(name, by_name.get(Path(name).stem))
            if types is None:
                raise InputError(f"{self.root / labels}: no change_types for pair {name!r}")
            self.change_types[name] = types

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        for pair in super().pairs(split):
            types = self.change_types[Path(pair.location["before"]).name]
            yield replace(pair, change_type=TYPE_SEPARATOR.join(types), changed=types != (NO_CHANGE,))


def split_types(label: str | None) -> tuple[str, ...]:
    """'buildings_built+road_built' -> ('buildings_built', 'road_built'); None -> ()."""
    return tuple(label.split(TYPE_SEPARATOR)) if label else ()


def type_counts(labels: Sequence[str | None]) -> dict[str, int]:
    """Pairs per change type over multi-label `labels`, most frequent first."""
    counts: dict[str, int] = {}
    for label in labels:
        for t in split_types(label):
            counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def relevance(labels: Sequence[str | None], change_type: str) -> np.ndarray:
    """(N,) bool: which pairs carry `change_type`."""
    return np.array([change_type in split_types(lbl) for lbl in labels], dtype=bool)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Average precision (0..1) of ranking all items by `scores`, highest first.

    Ties are ranked pessimistically (relevant items after irrelevant ones of equal score), so a
    constant score never looks better than chance.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 1:
        raise InputError(f"scores {scores.shape} and relevance {relevant.shape} must be equal 1-D shapes")
    if not relevant.any():
        raise InputError("average precision needs at least one relevant item")
    order = np.lexsort((relevant, -scores))  # by score, then irrelevant (False) first within ties
    hits = relevant[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def query_type_ap(
    sim: np.ndarray, labels: Sequence[str | None], queries: Mapping[str, Sequence[str]]
) -> dict[str, list[float]]:
    """AP of every query of every change type; `sim` is (number of queries, N) in `queries` order."""
    sim = np.asarray(sim)
    n_queries = sum(len(q) for q in queries.values())
    if sim.shape != (n_queries, len(labels)):
        raise InputError(f"similarity {sim.shape}: expected ({n_queries} queries, {len(labels)} pairs)")
    out, row = {}, 0
    for change_type, texts in queries.items():
        rel = relevance(labels, change_type)
        out[change_type] = [average_precision(sim[row + i], rel) for i in range(len(texts))]
        row += len(texts)
    return out


