"""Symmetric InfoNCE (CLIP-style) with a learnable, clamped temperature and false-negative masking."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: CLIP's cap on the logit scale (temperature >= 0.01): beyond it training becomes unstable.
MAX_LOGIT_SCALE = math.log(100.0)


def info_nce(
    pair_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    false_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the pair->text and text->pair cross-entropies over a batch of matched rows.

    `pair_emb`, `text_emb`: (B, d) L2-normalised, row i of each belongs together.
    `logit_scale`: log of the inverse temperature (the model's parameter); clamped to
    [0, log 100] here so a runaway value can neither explode nor flip the logits.
    `false_negatives`: (B, B) bool, True where an off-diagonal entry is NOT a real negative (e.g. two
    no-change pairs, or a caption that also describes the other pair). Those logits are removed from
    both softmaxes, so the loss neither pushes apart nor rewards them. The diagonal is never masked.
    """
    if pair_emb.shape != text_emb.shape or pair_emb.ndim != 2:
        raise ValueError(
            f"pair {tuple(pair_emb.shape)} and text {tuple(text_emb.shape)} embeddings must be (B, d)"
        )
    scale = logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()
    logits = scale * pair_emb @ text_emb.t()  # (B pairs, B texts)
    if false_negatives is not None:
        mask = false_negatives.to(device=logits.device, dtype=torch.bool)
        mask = mask & ~torch.eye(len(mask), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
