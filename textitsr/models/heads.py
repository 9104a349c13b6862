"""Projection heads: one per modality, mapping its features into the shared L2-normalised space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textitsr.errors import InputError


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


class ProjectionEnsemble(nn.Module):
    """K projection heads trained apart (one seed each), joined into one unit vector: the dot product
    of two joined outputs is the mean of the K heads' cosines.

    Why: under the leave-source-out protocol the mean similarity of three seeds' heads beat the
    single heads by about 2 mR on every fold (benchmarks/results/real-leave-source-out.md), and
    joining them keeps one vector per item, so every index, export and search path stays as it is.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float, k: int):
        super().__init__()
        if k < 2 or out_dim % k:
            raise InputError(f"model config: {out_dim} projection dims cannot be split among {k} heads")
        self.in_dim, self.out_dim, self.k = in_dim, out_dim, k
        self.heads = nn.ModuleList(
            ProjectionHead(in_dim, out_dim // k, hidden_dim, dropout) for _ in range(k)
        )
        # identity until an embedding adapter is folded into it (`active.finetune.fold_adapter`)
        self.register_buffer("mix", torch.eye(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        joined = torch.cat([head(x) for head in self.heads], dim=-1) / self.k**0.5
        return F.normalize(joined @ self.mix.t(), dim=-1)


def build_projection(
    in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float, projections: int = 1
) -> nn.Module:
    """One `ProjectionHead`, or `projections` of them joined (`ProjectionEnsemble`; `ModelConfig`
    has checked the count)."""
    if projections == 1:
        return ProjectionHead(in_dim, out_dim, hidden_dim, dropout)
    return ProjectionEnsemble(in_dim, out_dim, hidden_dim, dropout, projections)
