"""Retrieval metrics under the strict full-gallery protocol (text-ITSR, arXiv 2501.19043).

The gallery is always the WHOLE split (change and no-change pairs together), because a gallery
of change pairs only hides the hardest confusions. Conventions:

- text->pair: every caption of a change pair is a query; the relevant item is its own pair.
  Captions of no-change pairs are reported separately ("no_change"): any no-change pair is relevant.
- pair->text: every pair that has captions queries all captions of the split; relevant items are its
  own captions, and any caption with *exactly the same text* (identical strings embed identically,
  so ranking one above the other is arbitrary: mostly the shared no-change sentences).
- Ties count against the query (an irrelevant item scoring equal to the best relevant one ranks
  above it), so a constant similarity matrix scores ~0 instead of 100%.
- mAP uses change-type labels where the source has them: pair->pair (query excluded from its own
  gallery) and text->pair (every caption; relevant = pairs of its pair's change type).

Recalls are returned in percent; mAP in percent too, for one scale across the tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from textitsr.errors import InputError

KS = (1, 5, 10)


def ranks_of_best_relevant(sim: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """0-based rank of the best-scoring relevant item of each query row (ties ranked pessimistically).

    `sim` is (Q, N) scores; `relevant` is (Q, N) bool with at least one True per row.
    """
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if sim.shape != relevant.shape or sim.ndim != 2:
        raise InputError(f"similarity {sim.shape} and relevance {relevant.shape} must be equal 2-D shapes")
    if not relevant.any(axis=1).all():
        raise InputError("every query needs at least one relevant item in the gallery")
    best = np.where(relevant, sim, -np.inf).max(axis=1, keepdims=True)
    return ((sim >= best) & ~relevant).sum(axis=1)


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """{"r1": %, "r5": %, ...}: share of queries whose best relevant item ranks within the top k."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise InputError("recall needs at least one query")
    return {f"r{k}": float(100.0 * np.mean(ranks < k)) for k in ks}


def mean_average_precision(sim: np.ndarray, relevant: np.ndarray) -> float:
    """Mean over queries of average precision over the full ranking (percent); rows with no
    relevant item are skipped. Ties are broken by gallery order (stable sort)."""
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    keep = relevant.any(axis=1)
    if not keep.any():
        raise InputError("mAP needs at least one query with a relevant item")
    sim, relevant = sim[keep], relevant[keep]
    order = np.argsort(-sim, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    cum = np.cumsum(hits, axis=1)
    precision = cum / np.arange(1, hits.shape[1] + 1)
    ap = (precision * hits).sum(axis=1) / hits.sum(axis=1)
    return float(100.0 * ap.mean())


def retrieval_metrics(
    sim_text_to_pair: np.ndarray,
    caption_pair: np.ndarray,
    pair_changed: np.ndarray | None = None,
    pair_labels: Sequence[str | None] | None = None,
    caption_text: Sequence[str] | np.ndarray | None = None,
    sim_pair_to_pair: np.ndarray | None = None,
    caption_penalty: np.ndarray | None = None,
) -> dict:
    """All metrics of one split.

    sim_text_to_pair: (C, N) similarity of every caption of the split to every pair.
    caption_pair: (C,) index of the pair each caption belongs to.
    pair_changed: (N,) bool; None -> every pair counts as a change pair (no no-change report).
    pair_labels: (N,) change types for mAP (None entries / None -> no mAP).
    caption_text: (C,) caption strings or integer text ids; equal texts are interchangeable in
        pair->text. None -> only a pair's own captions are relevant.
    sim_pair_to_pair: (N, N) for pair->pair mAP (None in the output when no pair shares a label).
    caption_penalty: (C,) subtracted from each caption's scores when ranking captions for a pair
        (pair->text only: the hubness correction describing uses, `embedding.hubness`).
    """
    sim = np.asarray(sim_text_to_pair, dtype=np.float64)
    caption_pair = np.asarray(caption_pair, dtype=np.int64)
    if sim.ndim != 2 or caption_pair.shape != (sim.shape[0],):
        raise InputError(
            f"sim_text_to_pair must be (captions, pairs) with one pair index per caption; "
            f"got {sim.shape} and {caption_pair.shape}"
        )
    n_caps, n_pairs = sim.shape
    if n_caps == 0 or n_pairs == 0:
        raise InputError("evaluation needs at least one pair with a caption")
    if caption_pair.min() < 0 or caption_pair.max() >= n_pairs:
        raise InputError(f"caption_pair indices must lie in [0, {n_pairs})")
    changed = np.ones(n_pairs, bool) if pair_changed is None else np.asarray(pair_changed, bool)
    if changed.shape != (n_pairs,):
        raise InputError(f"pair_changed must have one entry per pair ({n_pairs}), got {changed.shape}")

    own = np.zeros((n_caps, n_pairs), bool)
    own[np.arange(n_caps), caption_pair] = True
    cap_changed = changed[caption_pair]
    if not cap_changed.any():
        raise InputError("text->pair needs at least one caption of a change pair")

    out: dict = {}
    # text -> pair, change captions: relevant = own pair.
    t2p_ranks = ranks_of_best_relevant(sim[cap_changed], own[cap_changed])
    out["text_to_pair"] = recall_at_k(t2p_ranks)

    # pair -> text: relevant = own captions plus captions with the same text.
    rel_p2t = own.T.copy()
    if caption_text is not None:
        text_ids = _text_ids(caption_text, n_caps)
        pair_has_text = np.zeros((n_pairs, int(text_ids.max()) + 1), bool)
        pair_has_text[caption_pair, text_ids] = True
        rel_p2t = pair_has_text[:, text_ids]  # (N, C)
    has_caption = rel_p2t.any(axis=1)
    describe = sim if caption_penalty is None else sim - np.asarray(caption_penalty, np.float64)[:, None]
    p2t_ranks = ranks_of_best_relevant(describe.T[has_caption], rel_p2t[has_caption])
    out["pair_to_text"] = recall_at_k(p2t_ranks)
    out["mR"] = float(np.mean(list(out["text_to_pair"].values()) + list(out["pair_to_text"].values())))

    # no-change captions: any no-change pair is relevant.
    nc_caps = ~cap_changed
    if pair_changed is not None and nc_caps.any():
        rel_nc = np.broadcast_to(~changed, (int(nc_caps.sum()), n_pairs))
        out["no_change"] = {
            **recall_at_k(ranks_of_best_relevant(sim[nc_caps], rel_nc)),
            "n_queries": int(nc_caps.sum()),
        }
    else:
        out["no_change"] = None

    out["map"] = None
    if pair_labels is not None:
        labels = np.asarray([("" if x is None else str(x)) for x in pair_labels], dtype=object)
        if labels.shape != (n_pairs,):
            raise InputError(f"pair_labels must have one entry per pair ({n_pairs})")
        if (labels != "").all():
            same = labels[:, None] == labels[None, :]
            maps = {"text_to_pair": mean_average_precision(sim, same[caption_pair]), "pair_to_pair": None}
            if sim_pair_to_pair is not None and n_pairs > 1:
                spp = np.asarray(sim_pair_to_pair, dtype=np.float64)
                # Exclude each query from its own gallery.
                rel = same.copy()
                np.fill_diagonal(rel, False)
                spp = spp.copy()
                np.fill_diagonal(spp, -np.inf)
                if rel.any():
                    maps["pair_to_pair"] = mean_average_precision(spp, rel)
            out["map"] = maps

    out["n_pairs"] = int(n_pairs)
    out["n_queries"] = int(cap_changed.sum())
    out["n_captions"] = int(n_caps)
    return out


def _text_ids(caption_text: Sequence[str] | np.ndarray, n_caps: int) -> np.ndarray:
    arr = np.asarray(caption_text)
    if arr.shape != (n_caps,):
        raise InputError(f"caption_text must have one entry per caption ({n_caps}), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    _, ids = np.unique(np.asarray([str(t).strip().lower() for t in arr]), return_inverse=True)
    return ids.astype(np.int64)


def random_baseline(
    caption_pair: np.ndarray,
    pair_changed: np.ndarray | None = None,
    caption_text: Sequence[str] | np.ndarray | None = None,
    trials: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Mean metrics of random similarity matrices on this split (the 'chance' row of a table)."""
    rng = np.random.default_rng(seed)
    caption_pair = np.asarray(caption_pair)
    n_pairs = int(caption_pair.max()) + 1 if pair_changed is None else len(pair_changed)
    runs = [
        retrieval_metrics(
            rng.standard_normal((len(caption_pair), n_pairs)),
            caption_pair,
            pair_changed,
            caption_text=caption_text,
        )
        for _ in range(trials)
    ]
    flat = [flatten_metrics(r) for r in runs]
    return {k: float(np.mean([f[k] for f in flat])) for k in flat[0]}


def flatten_metrics(metrics: dict) -> dict[str, float]:
    """{"t2p_r1": ..., "p2t_r10": ..., "mR": ...} — one flat row for tables."""
    row = {f"t2p_{k}": v for k, v in metrics["text_to_pair"].items()}
    row.update({f"p2t_{k}": v for k, v in metrics["pair_to_text"].items()})
    row["mR"] = metrics["mR"]
    return row


#: The cut-off the ANNEAL papers report (mAP@20).
MAP_K = 20


def pair_map_at_k(emb: np.ndarray, labels: Sequence[str | None], k: int = MAP_K) -> float:
    """mAP@k in percent of pair -> pair retrieval (query by example), relevant = same label.

    Each item queries all the others (itself excluded); AP@k averages precision at each relevant hit
    in the top k, divided by min(k, number of relevant items), so a perfect top k scores 100. Items
    whose label no other item shares are not queries. Chunked, so a large archive fits in memory.
    """
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
