"""Fit a probed model's change-type and caption probes on real labelled pairs (after training).

Why after: the probes are linear maps on features the contrastive training has fixed (the fused pair
features, the sentence embeddings), so fitting them is a convex problem solved in seconds, and the
contrastive part never learns to lean on them. Only real pairs are used: under the leave-source-out
protocol, adding generated pairs to the probes lost (benchmarks/results/real-leave-source-out.md).
A pair whose label is not a known change type ("other") teaches the caption probe only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from textitsr.errors import InputError

if TYPE_CHECKING:  # the recipe reads the defaults below without importing torch
    import torch

    from textitsr.embedding.cache import FeatureCache

#: L2 strength of the type probes (sklearn's C, on standardised features) and ridge strength of the
#: pair side's caption probe: chosen under the leave-source-out protocol.
DEFAULT_TYPE_C = 0.01
DEFAULT_CAPTION_ALPHA = 3000.0


def fused_pair_features(model: torch.nn.Module, cache: FeatureCache, idx: np.ndarray) -> np.ndarray:
    """What the pair head reads for pairs `idx` of `cache`: the fusion's output, (n, fusion dim)."""
    import torch

    parts = [np.zeros((0, model.fusion.out_dim), np.float32)]
    with torch.no_grad():
        for i in range(0, len(idx), 256):
            feats = cache.pair_features(np.asarray(idx[i : i + 256]), model.device, model.uses_tokens)
            parts.append(model.fusion(feats.to(model.device, torch.float32)).float().cpu().numpy())
    return np.concatenate(parts)


def source_balance(sources: Sequence[str | None], power: float) -> np.ndarray:
    """A weight per pair, n_source ** -power with mean 1 (pairs without a source count as one
    source each). Why: a time series of one place gives dozens of near-alike pairs; at power 1 every
    source weighs the same, at 0 every pair does."""
    counts = Counter(sources)
    weights = np.array([float(counts[s]) ** -power if s is not None else 1.0 for s in sources])
    return weights / weights.mean() if len(weights) else weights


def fit_probes(
    model: torch.nn.Module,
    parts: Sequence[tuple[FeatureCache, np.ndarray]],
    type_c: float = DEFAULT_TYPE_C,
    caption_alpha: float = DEFAULT_CAPTION_ALPHA,
    weights: Sequence[np.ndarray] | None = None,
) -> dict:
    """Fit the probes `model`'s heads have on pairs `idx` of each `(cache, idx)` and their captions;
    `weights`: one weight per pair of each part (e.g. `source_balance`), a pair's captions sharing
    it. Returns what they were fitted on, for the checkpoint's record."""
    from textitsr.models.probes import ProbedHead, known_types

    pair_head, text_head = model.pair_head, model.text_head
    if not (isinstance(pair_head, ProbedHead) and isinstance(text_head, ProbedHead)):
        raise InputError("probes: the model's heads have none (type_weight and caption_weight are 0)")
    if weights is not None and [len(w) for w in weights] != [len(idx) for _, idx in parts]:
        raise InputError("probes: weights must give one weight per pair of each part")
    pair_x, pair_types, caption_rows, text_x, text_types = [], [], [], [], []
    pair_w, text_w = [], []
    n_sentences = 0
    for k, (cache, idx) in enumerate(parts):
        idx = np.asarray(idx, dtype=np.int64)
        pair_x.append(fused_pair_features(model, cache, idx))
        offsets = cache.caption_offsets
        for j, i in enumerate(idx):
            texts = cache.caption_text[offsets[i] : offsets[i + 1]]
            text_x.append(cache.text_features(texts).float().numpy())
            caption_rows.append(np.arange(n_sentences, n_sentences + len(texts)))
            n_sentences += len(texts)
            types = known_types(cache.change_type[i])
            pair_types.append(types)
            text_types += [types] * len(texts)
            w = 1.0 if weights is None else float(weights[k][j])
            pair_w.append(w)
            text_w += [w] * len(texts)
    pairs, sentences = np.concatenate(pair_x), np.concatenate(text_x)
    pair_w, text_w = np.array(pair_w), np.array(text_w)
    record: dict = {"pairs": len(pairs), "captions": len(sentences)}
    if pair_head.types is not None:
        record["type_c"] = type_c
        record["pairs_per_type"] = pair_head.types.fit(pairs, pair_types, type_c, pair_w)
        record["captions_per_type"] = text_head.types.fit(sentences, text_types, type_c, text_w)
    if pair_head.captions is not None:
        basis = text_head.captions.fit_basis(sentences)
        unit = sentences / (np.linalg.norm(sentences, axis=1, keepdims=True) + 1e-12)
        captioned = [i for i, rows in enumerate(caption_rows) if len(rows)]
        targets = np.stack([unit[caption_rows[i]].mean(0) for i in captioned]) @ basis.T
        pair_head.captions.fit_regression(pairs[captioned], targets, caption_alpha, pair_w[captioned])
        record["caption_alpha"] = caption_alpha
    return record
