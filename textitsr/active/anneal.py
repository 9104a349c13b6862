"""ANNEAL selection: which pairs of archive items to ask an analyst about next.

ANNEAL (arXiv 2306.11605, 2406.10107) labels PAIRS of items as similar / dissimilar instead of
labelling items with classes. A round proposes `batch` item pairs that are both *uncertain* (the
current metric space cannot tell whether they are similar) and *diverse* (not b copies of one
question):

- candidates: each item with its nearest neighbours plus a few random items, so the pool holds
  likely-similar pairs as well as likely-dissimilar ones (random pairs alone are almost all
  dissimilar and teach little);
- MGUE (metric-guided): a distance threshold separating similar from dissimilar labelled pairs
  (before labels of both kinds exist: Otsu's split of the candidate distances); a pair is
  uncertain when its distance is close to the threshold;
- BCGUE (binary-classifier-guided): a logistic regression on pair features (|a-b|, a*b) trained
  on the labels; uncertainty 1 - |2p - 1|;
- diversity: k-means with `batch` clusters on the pair features of the most uncertain
  candidates; the most uncertain member of each cluster is asked.

Everything here works on a plain (N, d) L2-normalised embedding matrix, so it is independent of
the model and the store (the service hands over `pair_embeddings()`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from textitsr.errors import InputError

#: Selection strategies: MGUE / BCGUE with clustering diversity, MGUE uncertainty alone (top-b),
#: and uniform random choice among the candidates (the baseline).
STRATEGIES = ("mgue", "bcgue", "uncertainty", "random")

#: A labelled item pair: (index a, index b, similar?).
Label = tuple[int, int, bool]


@dataclass(frozen=True)
class SelectionConfig:
    """How one round picks its pairs (defaults are the ones the CLI, app and benchmark use)."""

    strategy: str = "mgue"
    batch: int = 10
    #: Nearest neighbours per anchor item in the candidate pool.
    neighbors: int = 5
    #: Random partners per anchor item in the candidate pool.
    random_partners: int = 2
    #: At most this many anchor items (sampled) build the pool, bounding the cost on big archives.
    max_anchors: int = 2000
    #: Clustering runs on the pool_factor * batch most uncertain candidates.
    pool_factor: int = 5

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("batch", "neighbors", "max_anchors", "pool_factor"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.random_partners < 0:
            raise InputError(f"random_partners: expected >= 0, got {self.random_partners}")


def _check_embeddings(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) < 2:
        raise InputError(f"embeddings: expected an (N >= 2, d) matrix, got shape {emb.shape}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def candidate_pairs(
    emb: np.ndarray,
    neighbors: int = 5,
    random_partners: int = 2,
    *,
    max_anchors: int = 2000,
    exclude: Iterable[tuple[int, int]] = (),
    rng: np.random.Generator | None = None,
    items: np.ndarray | None = None,
) -> np.ndarray:
    """Unique unordered item pairs (M, 2) with a < b: anchors x (k nearest + r random partners).

    `items`: indices of the items that may appear in a pair (e.g. those an oracle can answer);
    None allows every item.
    """
    rng = rng or np.random.default_rng(0)
    emb = _check_embeddings(emb)
    pool = np.arange(len(emb)) if items is None else np.unique(np.asarray(items, dtype=np.int64))
    if len(pool) and not (0 <= pool[0] and pool[-1] < len(emb)):
        raise InputError(f"items: indices outside the {len(emb)} embeddings")
    n = len(pool)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    anchors = pool if n <= max_anchors else np.sort(rng.choice(pool, max_anchors, replace=False))
    blocked = np.ones(len(emb), dtype=bool)
    blocked[pool] = False
    k = min(neighbors, n - 1)
    found: list[np.ndarray] = []
    for start in range(0, len(anchors), 1024):  # chunks bound the (chunk, N) similarity block
        rows = anchors[start : start + 1024]
        sim = emb[rows] @ emb.T
        sim[np.arange(len(rows)), rows] = -np.inf
        sim[:, blocked] = -np.inf
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k > 0 else np.empty((len(rows), 0), int)
        found.append(np.stack([np.repeat(rows, k), nn.ravel()], axis=1))
        if random_partners:
            partners = pool[rng.integers(0, n, size=(len(rows), random_partners))]
            found.append(np.stack([np.repeat(rows, random_partners), partners.ravel()], axis=1))
    pairs = np.concatenate(found, axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.sort(pairs, axis=1)
    pairs = np.unique(pairs, axis=0)
    done = {(min(a, b), max(a, b)) for a, b in exclude}
    if done:
        keep = np.array([(int(a), int(b)) not in done for a, b in pairs], dtype=bool)
        pairs = pairs[keep]
    return pairs.astype(np.int64)


def pair_distances(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine distance 1 - <a, b> of each item pair (embeddings are L2-normalised)."""
    emb = _check_embeddings(emb)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return 1.0 - np.einsum("ij,ij->i", emb[pairs[:, 0]], emb[pairs[:, 1]])


def pair_features(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Symmetric features of an item pair, [|a - b|, a * b] (order of a and b does not matter)."""
    emb = _check_embeddings(emb)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    a, b = emb[pairs[:, 0]], emb[pairs[:, 1]]
    return np.concatenate([np.abs(a - b), a * b], axis=1)


def best_threshold(dist: np.ndarray, similar: np.ndarray) -> float:
    """The distance threshold that best separates similar (below) from dissimilar (above) pairs.

    Maximises balanced accuracy over the midpoints between consecutive sorted distances, so a
    handful of similar pairs among many dissimilar ones still moves the threshold.
    """
    dist = np.asarray(dist, dtype=np.float64)
    similar = np.asarray(similar, dtype=bool)
    if dist.shape != similar.shape or dist.ndim != 1:
        raise InputError(f"distances {dist.shape} and labels {similar.shape}: expected equal 1-D shapes")
    n_sim, n_dis = int(similar.sum()), int((~similar).sum())
    if n_sim == 0 or n_dis == 0:
        raise InputError("labels: the threshold needs at least one similar and one dissimilar pair")
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], similar[order]
    # Threshold after position i: pairs 0..i are called similar.
    tpr = np.cumsum(s) / n_sim
    tnr = (n_dis - np.cumsum(~s)) / n_dis
    score = np.concatenate([[0.5], 0.5 * (tpr + tnr)])  # index 0: nothing called similar
    cuts = np.concatenate([[d[0] - 1e-6], (d[:-1] + d[1:]) / 2, [d[-1] + 1e-6]])
    best = np.flatnonzero(score == score.max())
    return float(np.median(cuts[best]))


def split_threshold(dist: np.ndarray) -> float:
    """Cold start (no labels of both kinds yet): Otsu's split of the candidate distances.

    The distance that maximises the between-group variance of "near" and "far" candidates. A
    two-component Gaussian mixture was tried first, but when the near mode is tight and the far
    one broad, the components cross inside the near mode and every question asked is "similar".
    """
    d = np.sort(np.asarray(dist, dtype=np.float64).ravel())
    if len(d) < 2 or d[-1] - d[0] < 1e-12:
        return float(np.median(d)) if len(d) else 0.0
    n = len(d)
    csum = np.cumsum(d)
    w0 = np.arange(1, n) / n
    m0 = csum[:-1] / np.arange(1, n)
    m1 = (csum[-1] - csum[:-1]) / np.arange(n - 1, 0, -1)
    between = w0 * (1 - w0) * (m0 - m1) ** 2
    i = int(np.argmax(between))
    return float((d[i] + d[i + 1]) / 2)


def mgue_uncertainty(dist: np.ndarray, threshold: float) -> np.ndarray:
    """In [0, 1]; 1 for a distance on the threshold, falling linearly with |d - threshold|."""
    gap = np.abs(np.asarray(dist, dtype=np.float64) - threshold)
    return 1.0 - gap / max(float(gap.max()), 1e-12)


def fit_pair_classifier(features: np.ndarray, similar: np.ndarray, seed: int = 0):
    """Logistic regression similar-vs-dissimilar on pair features (classes balanced)."""
    from sklearn.linear_model import LogisticRegression

    similar = np.asarray(similar, dtype=bool)
    if similar.all() or not similar.any():
        raise InputError("labels: the classifier needs at least one similar and one dissimilar pair")
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
    return clf.fit(features, similar.astype(int))


def bcgue_uncertainty(prob_similar: np.ndarray) -> np.ndarray:
    """1 - |2p - 1|: 1 where the classifier says 50/50, 0 where it is sure."""
    return 1.0 - np.abs(2.0 * np.asarray(prob_similar, dtype=np.float64) - 1.0)


def diverse_top(
    features: np.ndarray, uncertainty: np.ndarray, batch: int, pool_factor: int = 5, seed: int = 0
) -> np.ndarray:
    """Indices of `batch` candidates: the most uncertain one of each k-means cluster of the pool.

    The pool is the `pool_factor * batch` most uncertain candidates; clusters are distinct, so no
    candidate is picked twice. Returned in decreasing uncertainty.
    """
    from sklearn.cluster import KMeans

    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    if len(uncertainty) <= batch:
        return np.argsort(-uncertainty, kind="stable")
    pool = np.argsort(-uncertainty, kind="stable")[: max(batch, pool_factor * batch)]
    n_clusters = min(batch, len(np.unique(features[pool], axis=0)))
    km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(features[pool])
    chosen = []
    for c in range(n_clusters):
        members = pool[km.labels_ == c]
        if len(members):
            chosen.append(members[np.argmax(uncertainty[members])])
    chosen = np.array(chosen, dtype=np.int64)
    if len(chosen) < batch:  # duplicate features collapsed clusters: fill with the next uncertain
        rest = [i for i in pool if i not in set(chosen.tolist())]
        chosen = np.concatenate([chosen, np.array(rest[: batch - len(chosen)], dtype=np.int64)])
    return chosen[np.argsort(-uncertainty[chosen], kind="stable")]


@dataclass(frozen=True)
class Selection:
    """One round's proposal: item pairs (b, 2), their uncertainty, and how it was estimated."""

    pairs: np.ndarray
    uncertainty: np.ndarray
    distances: np.ndarray
    #: "threshold" (MGUE with labels), "split" (cold start), "classifier" (BCGUE), "random".
    estimator: str
    threshold: float | None = None


def candidate_uncertainty(
    emb: np.ndarray, candidates: np.ndarray, labels: Sequence[Label], method: str, seed: int = 0
) -> tuple[np.ndarray, str, float | None]:
    """Uncertainty of each candidate under MGUE ("mgue") or BCGUE ("bcgue").

    Without both classes among the labels (cold start), both fall back to the cold-start split
    on the candidate distances (Otsu split).
    """
    dist = pair_distances(emb, candidates)
    sim = np.array([bool(s) for _, _, s in labels], dtype=bool)
    two_classes = len(sim) > 0 and sim.any() and not sim.all()
    if not two_classes:
        t = split_threshold(dist)
        return mgue_uncertainty(dist, t), "split", t
    lab_pairs = np.array([(a, b) for a, b, _ in labels], dtype=np.int64)
    if method == "bcgue":
        clf = fit_pair_classifier(pair_features(emb, lab_pairs), sim, seed=seed)
        prob = clf.predict_proba(pair_features(emb, candidates))[:, 1]
        return bcgue_uncertainty(prob), "classifier", None
    t = best_threshold(pair_distances(emb, lab_pairs), sim)
    return mgue_uncertainty(dist, t), "threshold", t


def select_batch(
    emb: np.ndarray,
    labels: Sequence[Label] = (),
    config: SelectionConfig | None = None,
    *,
    seed: int = 0,
    skipped: Iterable[tuple[int, int]] = (),
    items: np.ndarray | None = None,
) -> Selection:
    """Propose the next `config.batch` item pairs to label (never one already labelled/skipped);
    `items` restricts the pairs to those indices (None: every item)."""
    config = config or SelectionConfig()
    rng = np.random.default_rng(seed)
    emb = _check_embeddings(emb)
    n = len(emb)
    for a, b, _ in labels:
        if not (0 <= a < n and 0 <= b < n):
            raise InputError(f"labels: item index ({a}, {b}) outside the {n} embeddings")
    exclude = [(a, b) for a, b, _ in labels] + list(skipped)
    cands = candidate_pairs(
        emb,
        config.neighbors,
        config.random_partners,
        max_anchors=config.max_anchors,
        exclude=exclude,
        rng=rng,
        items=items,
    )
    if len(cands) == 0:
        raise InputError("no unlabelled candidate pairs left: every candidate has been asked")
    dist = pair_distances(emb, cands)
    if config.strategy == "random":
        pick = rng.choice(len(cands), size=min(config.batch, len(cands)), replace=False)
        return Selection(cands[pick], np.zeros(len(pick)), dist[pick], "random")
    method = "bcgue" if config.strategy == "bcgue" else "mgue"
    unc, estimator, t = candidate_uncertainty(emb, cands, labels, method, seed=seed)
    if config.strategy == "uncertainty":
        pick = np.argsort(-unc, kind="stable")[: config.batch]
    else:
        feats = pair_features(emb, cands)
        pick = diverse_top(feats, unc, config.batch, config.pool_factor, seed=seed)
    return Selection(cands[pick], unc[pick], dist[pick], estimator, t)
