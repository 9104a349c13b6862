"""What a real text match scores in one archive, so a query that matches nothing can be told apart.

The archive's own captions are real descriptions of its pairs. Used as queries, their best scores
show what a good match looks like for this model and archive; a query whose best score lies far
below them (nonsense, emoji, a change the archive does not hold) still gets a ranking, but the
app can say that nothing matched well. Computed once per opened store, from a fixed sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Captions sampled as queries (a fixed seed: the same store always gives the same calibration).
SAMPLE = 300
#: A best score below this quantile of the real captions' best scores is "low confidence".
LOW_QUANTILE = 0.02


@dataclass(frozen=True)
class MatchCalibration:
    """Best-match scores of the archive's captions used as queries: quantiles and the low bound."""

    n_queries: int
    low: float
    median: float

    def is_low(self, best_score: float) -> bool:
        """Whether a query's best score is below what (nearly) every real description scores."""
        return self.n_queries > 0 and best_score < self.low


def calibrate_text_matches(
    caption_embeddings: np.ndarray,
    pair_embeddings: np.ndarray | Callable[[np.ndarray], np.ndarray],
    *,
    sample: int = SAMPLE,
    seed: int = 0,
) -> MatchCalibration:
    """Top-1 cosine of up to `sample` distinct captions against every pair (L2-normalised rows).

    `pair_embeddings`: the (N, d) pair rows (read a block at a time, so a memory-mapped file is
    never loaded whole), or a function giving each query row's best score (a search index).
    """
    caps = np.asarray(caption_embeddings, dtype=np.float32)
    if len(caps) == 0 or (not callable(pair_embeddings) and len(pair_embeddings) == 0):
        return MatchCalibration(0, float("-inf"), float("nan"))
    rows = np.random.default_rng(seed).choice(len(caps), size=min(sample, len(caps)), replace=False)
    if callable(pair_embeddings):
        best = np.asarray(pair_embeddings(caps[rows]), dtype=np.float32)
    else:
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        for start in range(0, len(pair_embeddings), 65_536):  # bounded memory on large archives
            block = np.asarray(pair_embeddings[start : start + 65_536], dtype=np.float32)
            best = np.maximum(best, (caps[rows] @ block.T).max(axis=1))
    if not np.isfinite(best).any():
        return MatchCalibration(0, float("-inf"), float("nan"))
    return MatchCalibration(len(rows), float(np.quantile(best, LOW_QUANTILE)), float(np.median(best)))
