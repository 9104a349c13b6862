"""ANNEAL's yardstick: mAP@k of pair -> pair retrieval (query by example), relevant = same label.

Each item queries all the others (itself excluded); AP@k averages precision at each relevant hit
in the top k, divided by min(k, number of relevant items), so a perfect top k scores 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from textitsr.errors import InputError

#: The cut-off the ANNEAL papers report (mAP@20).
MAP_K = 20


def pair_map_at_k(emb: np.ndarray, labels: Sequence[str | None], k: int = MAP_K) -> float:
    """mAP@k in percent over the items whose label has at least one other item with it."""
    emb = np.asarray(emb, dtype=np.float32)
    lab = np.asarray(["" if x is None else str(x) for x in labels], dtype=object)
    if emb.ndim != 2 or len(emb) != len(lab):
        raise InputError(f"embeddings {emb.shape} and {len(lab)} labels: expected one label per row")
    if k < 1:
        raise InputError(f"k: expected a positive integer, got {k}")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    same = (lab[:, None] == lab[None, :]) & (lab[:, None] != "")
    np.fill_diagonal(same, False)
    keep = same.any(axis=1)
    if not keep.any():
        raise InputError("mAP@k needs at least two items with the same label")
    aps = []
    for start in range(0, len(emb), 1024):
        rows = np.arange(start, min(start + 1024, len(emb)))
        rows = rows[keep[rows]]
        if len(rows) == 0:
            continue
        sim = emb[rows] @ emb.T
        sim[np.arange(len(rows)), rows] = -np.inf
        kk = min(k, len(emb) - 1)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
        hits = np.take_along_axis(same[rows], top, axis=1)
        prec = np.cumsum(hits, axis=1) / np.arange(1, kk + 1)
        denom = np.minimum(same[rows].sum(axis=1), kk)
        aps.append((prec * hits).sum(axis=1) / denom)
    return float(100.0 * np.concatenate(aps).mean())
