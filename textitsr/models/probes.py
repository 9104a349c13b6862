"""Probed heads: linear probes fitted on real labelled pairs, joined to the contrastive embedding.

Why: linear maps on the frozen backbone's pair features, fitted on a few hundred real labelled pairs,
carry to unseen sources far better than contrastive training on mostly generated pairs does (real
labels carry further than fabricated ones; benchmarks/results/real-leave-source-out.md). A
`ProbedHead` therefore joins up to three unit vectors into one:

    embedding = normalize([sqrt(a) * contrastive, sqrt(b) * sqrt(p(type | input)), sqrt(c) * caption])

- the contrastive projection (trained by `training.train`),
- a change-type probe: softmax over CHANGE_TYPES, as sqrt(p) so that the dot product of two such
  parts is the Bhattacharyya coefficient of the two type distributions,
- a caption probe: a point in a low-dimensional caption space (principal directions of the training
  captions' sentence embeddings); the text side projects a sentence there, the pair side regresses
  the mean of its captions there (ridge).

The cosine of a text and a pair is then `a * cos + b * BC + c * cos_caption` (a = 1 - b - c). The
probes are fitted after the contrastive training (`training.probes`) and are frozen to its
gradients; an unfitted probe adds the same constant (types) or nothing (captions) to every score.
One vector per item keeps every index, export and search path unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textitsr.errors import InputError
from textitsr.models.heads import build_projection

#: The change types a probed head distinguishes (fixed order: it is the layout of the type part).
CHANGE_TYPES: tuple[str, ...] = (
    "none",
    "buildings_built",
    "buildings_demolished",
    "vegetation_cleared",
    "vegetation_grown",
    "water_expanded",
    "water_receded",
    "road_built",
)
#: Labels of generated or gathered data that mean one or more of CHANGE_TYPES.
TYPE_ALIASES: dict[str, tuple[str, ...]] = {
    "vegetation_cleared_for_buildings": ("buildings_built", "vegetation_cleared"),
    "vegetation_storm_damage": ("vegetation_cleared",),
    "road_laid": ("road_built",),
}
#: Dimensions of the caption space (principal directions of the training captions).
CAPTION_DIM = 128
#: Logit of a type the training data never showed (its probability is ~0 rather than a guess).
_ABSENT_LOGIT = -30.0


def known_types(label: str | Sequence[str] | None) -> tuple[str, ...]:
    """The CHANGE_TYPES of a label ("a+b" or a list); () when any part of it is not one of them
    (e.g. "other"), so that a pair is never taught a partial answer."""
    if label is None:
        return ()
    parts = label.split("+") if isinstance(label, str) else list(label)
    out: list[str] = []
    for part in (p.strip() for p in parts if p and p.strip()):
        mapped = TYPE_ALIASES.get(part, (part,))
        if not all(m in CHANGE_TYPES for m in mapped):
            return ()
        out += [m for m in mapped if m not in out]
    return tuple(out)


class _LinearProbe(nn.Module):
    """Standardised features -> linear; fitted in closed form or by sklearn, never by gradients."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.requires_grad_(False)

    def logits(self, x: Tensor) -> Tensor:
        return self.linear((x - self.mean) / self.scale)

    @torch.no_grad()
    def _set(self, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> None:
        for target, value in ((self.mean, mean), (self.scale, scale), (self.linear.weight, weight),
                              (self.linear.bias, bias)):
            target.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))


class TypeProbe(_LinearProbe):
    """Softmax over CHANGE_TYPES; returns sqrt(p), a unit vector (uniform until fitted)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__(in_dim, len(CHANGE_TYPES))

    def probabilities(self, x: Tensor) -> Tensor:
        return F.softmax(self.logits(x), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.probabilities(x).clamp_min(0.0).sqrt()

    def fit(
        self, features: np.ndarray, labels: Sequence[tuple[str, ...]], c: float,
        row_weights: np.ndarray | None = None,
    ) -> dict[str, int]:
        """Multinomial logistic regression (L2, strength 1/c) on the labelled rows; a row with k
        types counts once for each at weight 1/k (times its `row_weights` entry). Returns the
        number of rows per type."""
        from sklearn.linear_model import LogisticRegression

        rows, targets, weights = [], [], []
        for i, types in enumerate(labels):
            for t in types:
                rows.append(i)
                targets.append(CHANGE_TYPES.index(t))
                weights.append((1.0 if row_weights is None else float(row_weights[i])) / len(types))
        present = sorted(set(targets))
        if len(present) < 2:
            raise InputError(f"change-type probe: need labelled rows of at least 2 types, got {present}")
        x = np.asarray(features, dtype=np.float64)[rows]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        clf = LogisticRegression(C=c, max_iter=2000)
        clf.fit((x - mean) / scale, np.array(targets), sample_weight=np.array(weights))
        coef, icpt = clf.coef_, clf.intercept_
        if len(present) == 2:  # sklearn's binary form: one row for the second class
            coef, icpt = np.vstack([-coef, coef]) / 2, np.array([-icpt[0], icpt[0]]) / 2
        weight = np.zeros(self.linear.weight.shape, dtype=np.float32)
        bias = np.full(self.linear.bias.shape, _ABSENT_LOGIT, dtype=np.float32)
        for row, cls in enumerate(clf.classes_):
            weight[cls], bias[cls] = coef[row], icpt[row]
        self._set(mean, scale, weight, bias)
        return {CHANGE_TYPES[t]: targets.count(t) for t in present}


class CaptionProbe(_LinearProbe):
    """A point in the caption space, as a unit vector (zero, i.e. no contribution, until fitted).

    Text side (`sentences=True`): the L2-normalised sentence embedding projected on the caption
    space's directions. Pair side: a ridge regression from the standardised pair features to the
    projection of the mean of the pair's captions.
    """

    def __init__(self, in_dim: int, sentences: bool) -> None:
        super().__init__(in_dim, CAPTION_DIM)
        self.sentences = sentences

    def forward(self, x: Tensor) -> Tensor:
        if self.sentences:
            x = F.normalize(x, dim=-1)
        return F.normalize(self.logits(x), dim=-1)

    def fit_basis(self, sentences: np.ndarray) -> np.ndarray:
        """Text side: the caption space = the leading right singular vectors of the normalised
        training captions (uncentred: the directions captions vary along from the origin); with
        fewer captions than CAPTION_DIM the remaining directions are zero (they never contribute)."""
        x = np.asarray(sentences, dtype=np.float64)
        if not len(x):
            raise InputError("caption probe: no captions to fit the caption space on")
        x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
        dim = x.shape[1]
        basis = np.zeros((CAPTION_DIM, dim))
        found = np.linalg.svd(x, full_matrices=False)[2][:CAPTION_DIM]
        basis[: len(found)] = found
        self._set(np.zeros(dim), np.ones(dim), basis, np.zeros(CAPTION_DIM))
        return basis

    def fit_regression(
        self, features: np.ndarray, targets: np.ndarray, alpha: float, row_weights: np.ndarray | None = None
    ) -> None:
        """Pair side: ridge (strength `alpha`) from standardised features to caption-space targets."""
        from sklearn.linear_model import Ridge

        x = np.asarray(features, dtype=np.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        ridge = Ridge(alpha=alpha).fit(
            (x - mean) / scale, np.asarray(targets, dtype=np.float64), sample_weight=row_weights
        )
        self._set(mean, scale, ridge.coef_, ridge.intercept_)


class ProbedHead(nn.Module):
    """A projection head joined with a change-type probe and/or a caption probe (see module doc).

    `mix` is a linear map applied last (identity until an embedding adapter is folded into it, see
    `active.finetune.fold_adapter`), so that a fine-tune on stored embeddings stays exact.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float, *,
        type_weight: float, caption_weight: float, sentences: bool, projections: int = 1,
    ) -> None:
        super().__init__()
        probe_dims = probe_width(type_weight, caption_weight)
        if out_dim <= probe_dims:
            raise InputError(
                f"model config: embed_dim must exceed the probes' {probe_dims} dims, got {out_dim}"
            )
        self.in_dim, self.out_dim = in_dim, out_dim
        self.weights = (1.0 - type_weight - caption_weight, float(type_weight), float(caption_weight))
        self.projection = build_projection(in_dim, out_dim - probe_dims, hidden_dim, dropout, projections)
        self.types = TypeProbe(in_dim) if type_weight else None
        self.captions = CaptionProbe(in_dim, sentences) if caption_weight else None
        self.register_buffer("mix", torch.eye(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        parts = [self.projection, self.types, self.captions]
        weighted = [w**0.5 * p(x) for p, w in zip(parts, self.weights, strict=True) if p is not None]
        joined = torch.cat(weighted, dim=-1)
        return F.normalize(joined @ self.mix.t(), dim=-1)


def build_head(
    in_dim: int, out_dim: int, hidden_dim: int | None, dropout: float, *,
    type_weight: float = 0.0, caption_weight: float = 0.0, sentences: bool = False, projections: int = 1,
) -> nn.Module:
    """A plain projection without probes (checkpoints before them), else a `ProbedHead`;
    `sentences`: this head reads sentence embeddings (the text side); `projections`: how many
    separately trained projection heads are joined (`heads.ProjectionEnsemble`)."""
    if not (type_weight or caption_weight):
        return build_projection(in_dim, out_dim, hidden_dim, dropout, projections)
    return ProbedHead(in_dim, out_dim, hidden_dim, dropout, type_weight=type_weight,
                      caption_weight=caption_weight, sentences=sentences, projections=projections)


def probe_width(type_weight: float, caption_weight: float) -> int:
    """How many embedding dims the probes of these shares take (the last ones: type, then caption)."""
    return (len(CHANGE_TYPES) if type_weight else 0) + (CAPTION_DIM if caption_weight else 0)


def type_part(model_config: dict) -> slice | None:
    """Where a probed model's embeddings hold the change-type part (config as stored), None without."""
    if not model_config.get("type_weight"):
        return None
    dim = int(model_config["embed_dim"])
    start = dim - probe_width(model_config["type_weight"], model_config.get("caption_weight", 0.0))
    return slice(start, start + len(CHANGE_TYPES))


def is_identity(mix: Tensor) -> bool:
    """Whether a head's final map `mix` is still the identity (no fine-tune folded a map into it)."""
    return torch.equal(mix.cpu(), torch.eye(len(mix), dtype=mix.dtype))


def head_type_part(head: nn.Module | None) -> slice | None:
    """Where a head's embeddings hold a type part that reads as sqrt(p): a probed head with a type
    probe whose `mix` is still the identity (no fine-tune folded a map into it). None otherwise."""
    if not isinstance(head, ProbedHead) or head.types is None or not is_identity(head.mix):
        return None
    _, types, captions = head.weights
    return type_part({"embed_dim": head.out_dim, "type_weight": types, "caption_weight": captions})


def type_reading(embedding: np.ndarray, part: slice) -> dict[str, float]:
    """The change-type distribution a pair embedding carries: its type part is c * sqrt(p) for some
    c > 0, so p = part² / sum(part²). Types in CHANGE_TYPES order."""
    values = np.asarray(embedding, dtype=np.float64).reshape(-1)[part] ** 2
    total = float(values.sum())
    if not total > 0:
        return {}
    return {t: float(v / total) for t, v in zip(CHANGE_TYPES, values, strict=True)}
