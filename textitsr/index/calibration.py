"""How much a text match stands out in one archive, so a query that matches nothing can be told apart.

A raw cosine says little on its own: it depends on the model, the query's wording and the
archive (a synthetic archive's own captions score far higher than any real query). What does
carry over is how far a query's best pair stands out from the query's scores over the archive
as a whole: the *contrast*, (best - mean) / std over a fixed sample of pairs. A query that names
a change the archive holds has a few pairs well above the rest; one that matches nothing (a
change the archive lacks, nonsense) has a best pair that is only the top of the crowd.

The archive's own captions, used as queries, show what contrast a real description reaches;
a query below nearly all of them is flagged as a weak match (`is_low`), and so is a query that
resembles none of the archive's captions (a change it does not hold, nonsense). The same captions scored
against their own pairs give the scale for a describing sentence's confidence (`confidence`):
the share of the archive's own (caption, pair) scores it reaches. Measured on real archives:
benchmarks/results/trust.md. Computed once per opened store, from fixed samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Captions sampled as queries (a fixed seed: the same store always gives the same calibration).
SAMPLE = 300
#: Pairs sampled as the crowd a query's best score is compared with.
CROWD = 2048
#: A contrast below this quantile of the real captions' contrasts is "low confidence".
LOW_QUANTILE = 0.02
#: The most a query may resemble the archive's closest description and still count as novel. The
#: bound is the 2% quantile of how close each caption comes to another (real descriptions of one
#: archive resemble each other), capped here: captions that repeat one template (a synthetic world,
#: nearest caption ~0.84-0.96) would otherwise make every differently worded query novel. On the
#: queries of benchmarks/results/trust.md no right answer lies below 0.59 (chosen on them: optimistic).
TEXT_FLOOR = 0.55
#: Quantiles kept of the (caption, own pair) scores: the scale of `confidence`.
_LEVELS = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class MatchCalibration:
    """Contrast of the archive's captions as queries (low bound, median) and their own-pair scores."""

    n_queries: int
    low: float
    median: float
    #: A query whose closest archive caption is less similar than this names a change it lacks.
    text_low: float = float("-inf")
    crowd: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False, compare=False)
    own_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False, compare=False)

    def contrast(self, query: np.ndarray, best_score: float) -> float:
        """How many standard deviations `best_score` lies above the query's mean over the crowd."""
        if not len(self.crowd):
            return float("nan")
        scores = self.crowd @ np.asarray(query, np.float32).reshape(-1)
        return float((best_score - scores.mean()) / max(float(scores.std()), 1e-6))

    def is_low(self, query: np.ndarray, best_score: float, best_caption: float | None = None) -> bool:
        """Whether the query's best pair stands out less than (nearly) every real description's, or
        the query resembles no description the archive holds (`best_caption`: its closest one)."""
        if self.n_queries == 0:
            return False
        if best_caption is not None and best_caption < self.text_low:
            return True
        c = self.contrast(query, best_score)
        return bool(np.isfinite(c) and c < self.low)

    def confidence(self, score: float) -> float | None:
        """Share (0-1) of the archive's own (caption, pair) scores below `score`; None: no captions."""
        if not len(self.own_scores):
            return None
        return float(np.interp(score, self.own_scores, _LEVELS))


def calibrate_text_matches(
    caption_embeddings: np.ndarray,
    pair_embeddings: np.ndarray,
    best_scores: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    caption_pairs: np.ndarray | None = None,
    sample: int = SAMPLE,
    seed: int = 0,
) -> MatchCalibration:
    """Calibrate on up to `sample` distinct captions (L2-normalised rows) against the archive.

    `pair_embeddings`: the (N, d) pair rows (only `CROWD` sampled rows and, without `best_scores`,
    one block at a time are read: a memory-mapped file is never loaded whole). `best_scores`:
    each query row's best score through a search index. `caption_pairs[i]`: the pair row caption
    i describes (gives the `confidence` scale).
    """
    caps = np.asarray(caption_embeddings, dtype=np.float32)
    n = len(pair_embeddings)
    if len(caps) == 0 or n == 0:
        return MatchCalibration(0, float("-inf"), float("nan"))
    rng = np.random.default_rng(seed)
    crowd_rows = np.sort(rng.choice(n, size=min(CROWD, n), replace=False))
    crowd = np.asarray(pair_embeddings[crowd_rows], dtype=np.float32)
    rows = rng.choice(len(caps), size=min(sample, len(caps)), replace=False)
    queries = caps[rows]
    if best_scores is not None:
        best = np.asarray(best_scores(queries), dtype=np.float32)
    else:
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        for start in range(0, n, 65_536):  # bounded memory on large archives
            block = np.asarray(pair_embeddings[start : start + 65_536], dtype=np.float32)
            best = np.maximum(best, (queries @ block.T).max(axis=1))
    own = np.zeros(0, np.float32)
    if caption_pairs is not None and len(caption_pairs):
        own_rows = np.asarray(caption_pairs)[rows]
        order = np.argsort(own_rows)  # read the pair rows in order (memory-mapped files)
        mine = np.empty_like(queries)
        mine[order] = np.asarray(pair_embeddings[own_rows[order]], dtype=np.float32)
        own = np.quantile((queries * mine).sum(axis=1), _LEVELS).astype(np.float32)
    cal = MatchCalibration(len(rows), float("-inf"), float("nan"), crowd=crowd, own_scores=own)
    contrasts = np.array([cal.contrast(q, b) for q, b in zip(queries, best, strict=True)])
    contrasts = contrasts[np.isfinite(contrasts)]
    if not len(contrasts):
        return MatchCalibration(0, float("-inf"), float("nan"))
    nearest = np.full(len(rows), -np.inf, dtype=np.float32)  # each sampled caption's closest other one
    for start in range(0, len(caps), 65_536):
        sims = queries @ caps[start : start + 65_536].T
        mine = (rows >= start) & (rows < start + len(sims[0]))
        sims[np.flatnonzero(mine), rows[mine] - start] = -np.inf
        nearest = np.maximum(nearest, sims.max(axis=1))
    nearest = nearest[np.isfinite(nearest)]
    text_low = min(TEXT_FLOOR, float(np.quantile(nearest, LOW_QUANTILE))) if len(nearest) else float("-inf")
    return MatchCalibration(len(rows), float(np.quantile(contrasts, LOW_QUANTILE)),
                            float(np.median(contrasts)), text_low, crowd, own)
