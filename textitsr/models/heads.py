"""Projection heads: one per modality, mapping its features into the shared L2-normalised space."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear, L2-normalised.

    The input LayerNorm puts GFF operators of very different scales (a difference vs. a
    concatenation of raw backbone globals) on an equal footing before the MLP.
    """

    def __init__(self, in_dim: int, out_dim: int = 256, hidden_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        hidden = hidden_dim or 2 * out_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)
