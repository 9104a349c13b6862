"""Archive-relative change: how much more a pair changed than the pairs embedded with it.

Why: the change-type probe reads change the same way on every sensor, so within one archive (one
sensor, often one place over many dates) it ranks "changed" against "unchanged" below the plain size
of the pixel difference on many sources (benchmarks/results/real-leave-source-out.md). An archive's
own pixel differences say which of its pairs changed more than its usual swing of season, haze and
light. So a pair's change-type reading is shifted by that: its "none" logit is lowered by
`weight * z`, where z is the robust z-score of the pair's log mean |after - before| among the pairs
of its archive embedded with it (an index shard: up to 512 pairs of one source, split further where a
pairs folder names each pair's sensor or dataset; fewer than 3 pairs: no reading; fewer than 8: a
floor on the spread, so one pair cannot swing the reading).

Only the type part of the embedding moves, and its norm is kept, so the contrastive and caption
parts, the vector's length and every index and search path stay as they were. A model without a type
probe, or one whose pair head was fine-tuned (`mix` is no longer the identity, so the part no longer
reads as sqrt(p)), is left unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from textitsr.data.pairs import BitemporalPair
from textitsr.models.probes import head_type_part

#: How far one robust standard deviation of an archive's pixel change moves a pair's "none" logit
#: (chosen leave-source-out; 0 turns the calibration off).
ARCHIVE_CHANGE_WEIGHT = 4.0
#: An archive of fewer pairs than this gives no statistics: its pairs are read on their own.
MIN_ARCHIVE_PAIRS = 3
#: Below this many pairs a median and spread swing with one pair, so the spread is at least
#: SMALL_ARCHIVE_SPREAD (log units): only a pair that changed far more than the others reads as changed.
SMALL_ARCHIVE_PAIRS = 8
SMALL_ARCHIVE_SPREAD = 0.6
#: |z| is clipped here: one odd pair (a cloud, a missing date) cannot dominate its reading.
Z_CLIP = 3.0
#: Smallest spread (log units) of an archive's pixel changes: pairs that all changed alike stay alike.
MIN_SPREAD = 0.05
#: Mean absolute differences below this (a scaled pixel value) count as this, so the log stays finite.
MIN_CHANGE = 1e-4


def pixel_change(before: np.ndarray, after: np.ndarray) -> float:
    """Mean |after - before| of two display images (uint8 RGB), scaled to 0..1; NaN when their
    shapes differ (the pair then gets no archive-relative reading)."""
    if before.shape != after.shape:
        return float("nan")
    if before.dtype == after.dtype == np.uint8:  # exact in integers, and half the memory of floats
        total = np.abs(np.subtract(after, before, dtype=np.int16)).sum(dtype=np.int64)
        return float(total / max(before.size, 1) / 255.0)
    return float(np.abs(after.astype(np.float32) - before.astype(np.float32)).mean() / 255.0)


def pixel_changes(pairs: Iterable[BitemporalPair]) -> dict[str, float]:
    """{pair_id: `pixel_change`} of each pair: also the model-free pixel-difference baseline's score."""
    return {p.pair_id: pixel_change(p.rgb("before"), p.rgb("after")) for p in pairs}


def pair_changes_and_archives(
    pairs: Iterable[BitemporalPair],
) -> tuple[dict[str, float], dict[str, str | None]]:
    """({pair_id: `pixel_change`}, {pair_id: declared archive}) of the pairs, read in one pass."""
    changes, archives = {}, {}
    for p in pairs:
        changes[p.pair_id] = pixel_change(p.rgb("before"), p.rgb("after"))
        archives[p.pair_id] = p.archive
    return changes, archives


def relative_change(magnitudes: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Robust z-score of each pair's log pixel change within its group (one archive; None: all one
    group): (log m - median) / (1.4826 MAD), clipped to +-Z_CLIP; NaN (no reading) for a NaN magnitude
    and for every pair of a group with fewer than MIN_ARCHIVE_PAIRS pairs; the spread of a group with
    fewer than SMALL_ARCHIVE_PAIRS is at least SMALL_ARCHIVE_SPREAD."""
    logs = np.log(np.maximum(np.asarray(magnitudes, dtype=np.float64), MIN_CHANGE))
    z = np.full(len(logs), np.nan)
    keys = np.zeros(len(logs), np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    for key in np.unique(keys):
        rows = np.flatnonzero((keys == key) & np.isfinite(logs))
        if len(rows) < MIN_ARCHIVE_PAIRS:
            continue
        median = np.median(logs[rows])
        floor = SMALL_ARCHIVE_SPREAD if len(rows) < SMALL_ARCHIVE_PAIRS else MIN_SPREAD
        spread = max(1.4826 * float(np.median(np.abs(logs[rows] - median))), floor)
        z[rows] = np.clip((logs[rows] - median) / spread, -Z_CLIP, Z_CLIP)
    return z


def archive_sizes(magnitudes: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """How many pairs with a known pixel change each pair's group holds: what its reading stands on."""
    known = np.isfinite(np.asarray(magnitudes, dtype=np.float64))
    if groups is None:
        return np.full(len(known), int(known.sum()))
    _, keys = np.unique(groups, return_inverse=True)
    return np.bincount(keys, weights=known, minlength=keys.max(initial=-1) + 1)[keys].astype(int)


def archive_keys(archives: Sequence[str | None]) -> np.ndarray:
    """Group keys for `relative_change` from pairs' declared archives (None: the undeclared one)."""
    return np.array([a or "" for a in archives], dtype=str)


def type_slice(model: Any) -> slice | None:
    """Where `model`'s pair embeddings hold a type part that reads as sqrt(p): a probed pair head
    with a type probe whose `mix` is the identity. None otherwise."""
    return head_type_part(getattr(model, "pair_head", None))


def calibrate_change(
    embeddings: np.ndarray, z: np.ndarray, part: slice | None, weight: float = ARCHIVE_CHANGE_WEIGHT
) -> np.ndarray:
    """`embeddings` with each row's type part re-read as p'(none) ∝ p(none) exp(-weight z) (the
    other types keep their ratios), its norm kept; rows with no reading (NaN z) and all rows without a
    type part or weight unchanged."""
    if part is None or not weight or not len(embeddings):
        return embeddings
    values = np.asarray(embeddings[:, part], dtype=np.float64)
    norm = np.linalg.norm(values, axis=1, keepdims=True)
    logits = np.log(np.maximum(values**2, 1e-30))
    logits[:, 0] -= weight * np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    out = np.array(embeddings, copy=True)
    out[:, part] = (np.sqrt(p) * norm).astype(out.dtype)
    return out


@dataclass(frozen=True)
class ArchiveChanges:
    """How a gallery's pairs are read relative to their archive: each pair's pixel change, its
    archive (None: the gallery is one archive) and the weight (0: each pair read on its own)."""

    pixel_changes: np.ndarray
    archives: np.ndarray | None = None
    weight: float = ARCHIVE_CHANGE_WEIGHT

    @classmethod
    def of(
        cls,
        changes: Mapping[str, float],
        pair_ids: Sequence[str],
        weight: float = ARCHIVE_CHANGE_WEIGHT,
        archives: Mapping[str, str] | None = None,
    ) -> ArchiveChanges:
        """`pair_ids` (in that order) with their `pixel_changes` (NaN where unknown), in their
        `archives` (a pair not listed: the undeclared archive; None: all one archive)."""
        magnitudes = np.array([changes.get(pid, np.nan) for pid in pair_ids], dtype=np.float64)
        groups = None if archives is None else archive_keys([archives.get(pid) for pid in pair_ids])
        return cls(magnitudes, groups, weight)

    @classmethod
    def read(
        cls, pairs: Iterable[BitemporalPair], pair_ids: Sequence[str], weight: float = ARCHIVE_CHANGE_WEIGHT
    ) -> ArchiveChanges:
        """The reading of `pair_ids` (in that order) from their pairs, each in its declared archive
        (`BitemporalPair.archive`), as an index build of them reads them."""
        changes, archives = pair_changes_and_archives(pairs)
        return cls.of(changes, pair_ids, weight, archives)

    def subset(self, rows: np.ndarray) -> ArchiveChanges:
        archives = None if self.archives is None else np.asarray(self.archives)[rows]
        return ArchiveChanges(np.asarray(self.pixel_changes)[rows], archives, self.weight)

    def calibrate(self, model: Any, embeddings: np.ndarray) -> np.ndarray:
        """`calibrate_change` of `model`'s embeddings of these pairs (in this order)."""
        z = relative_change(self.pixel_changes, self.archives)
        return calibrate_change(embeddings, z, type_slice(model), self.weight)
