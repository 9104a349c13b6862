"""Fusion of the two dates' image features into one pair feature.

- GFF (global feature fusion): parameter-free operators on the global features, and concatenations
  of them, e.g. "gff:before+after+diff". The paper's baselines are GFF specs too: "gff:after",
  "gff:before", "gff:diff".
- TFF (token feature fusion, "tff"): RSICCformer-style dual-branch transformer over patch tokens:
  per layer each date's tokens cross-attend to the token difference (after - before); each layer's
  two branches are concatenated and refined by a convolutional residual block on the token grid;
  the layers' fused grids are summed and mean-pooled. Tokens are first projected to the fusion
  width and given a learned 2-D (row + column) position embedding.
- "concat-transformer" (= "concat-transformer:channel"): the public variant (Roy et al. 2026): the
  dates joined along channels at each grid cell (N tokens of 2 x width), no position embedding, a
  post-norm encoder (3 layers, 16 heads, 2048-wide ReLU feed-forward, dropout 0.25), mean-pooled.
  Tokens are first projected to width/2 per date (`width` = 2 x the backbone width keeps the raw
  channels, as published). It beat the sequence layout on both benchmarks, so a bare
  "concat-transformer" means it.
- "concat-transformer:sequence": both dates' tokens in one sequence with learned temporal and
  spatial embeddings and a CLS token, through a pre-norm transformer encoder; the CLS output is the
  feature. Checkpoints written before the channel layout became the default say a bare
  "concat-transformer" and mean this layout: `explicit_fusion_spec(spec, LEGACY_CONCAT_LAYOUT)`
  reads them so.

Layer norm replaces batch norm throughout, so a pair's embedding never depends on its batch.

`build_fusion(spec, image_dim, num_tokens, ...)` is the only constructor callers need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textitsr.errors import InputError

__all__ = [
    "GFF_OPERATORS",
    "FUSION_KINDS",
    "PairFeatures",
    "Fusion",
    "GlobalFeatureFusion",
    "TokenFeatureFusion",
    "ConcatTransformerFusion",
    "ChannelConcatTransformerFusion",
    "build_fusion",
    "explicit_fusion_spec",
    "parse_fusion_spec",
]


@dataclass
class PairFeatures:
    """Backbone outputs for a batch of pairs; tokens are None when only globals were computed."""

    before_global: Tensor  # (B, D)
    after_global: Tensor  # (B, D)
    before_tokens: Tensor | None = None  # (B, N, D)
    after_tokens: Tensor | None = None  # (B, N, D)

    def __len__(self) -> int:
        return int(self.before_global.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PairFeatures:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return PairFeatures(
            move(self.before_global),
            move(self.after_global),
            move(self.before_tokens),
            move(self.after_tokens),
        )

    def __getitem__(self, index) -> PairFeatures:
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return PairFeatures(
            pick(self.before_global),
            pick(self.after_global),
            pick(self.before_tokens),
            pick(self.after_tokens),
        )

    @staticmethod
    def cat(parts: list[PairFeatures]) -> PairFeatures:
        def join(ts: list[Tensor | None]) -> Tensor | None:
            return None if any(t is None for t in ts) else torch.cat(ts)  # type: ignore[arg-type]

        return PairFeatures(
            torch.cat([p.before_global for p in parts]),
            torch.cat([p.after_global for p in parts]),
            join([p.before_tokens for p in parts]),
            join([p.after_tokens for p in parts]),
        )


# Each operator maps (before, after) -> a tensor of the same width, except "concat" (twice the width).
GFF_OPERATORS = {
    "before": lambda b, a: b,
    "after": lambda b, a: a,
    "diff": lambda b, a: a - b,
    "absdiff": lambda b, a: (a - b).abs(),
    "sum": lambda b, a: a + b,
    "mean": lambda b, a: (a + b) / 2,
    "product": lambda b, a: a * b,
    "concat": lambda b, a: torch.cat([b, a], dim=-1),
}
_GFF_ALIASES = {"difference": "diff", "abs": "absdiff", "prod": "product", "add": "sum", "avg": "mean"}
FUSION_KINDS = ("gff", "tff", "concat-transformer")
#: Token layouts of the concat-transformer: one sequence of both dates (ours), or channel-joined.
CONCAT_LAYOUTS = ("sequence", "channel")
#: What a bare "concat-transformer" means in a spec given now ...
DEFAULT_CONCAT_LAYOUT = "channel"
#: ... and what it meant in checkpoint configs written before the channel layout became the default.
LEGACY_CONCAT_LAYOUT = "sequence"


class Fusion(nn.Module):
    """PairFeatures -> (B, out_dim). `uses_tokens` says whether patch tokens are needed."""

    uses_tokens: bool = False
    out_dim: int
    spec: str

    def forward(self, feats: PairFeatures) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tokens(self, feats: PairFeatures) -> tuple[Tensor, Tensor]:
        if feats.before_tokens is None or feats.after_tokens is None:
            raise InputError(f"fusion {self.spec!r}: needs patch tokens, got PairFeatures without tokens")
        return feats.before_tokens, feats.after_tokens


class GlobalFeatureFusion(Fusion):
    """Concatenation of parameter-free operators on the two global features."""

    def __init__(self, operators: tuple[str, ...], image_dim: int) -> None:
        super().__init__()
        self.operators = operators
        self.spec = "gff:" + "+".join(operators)
        self.out_dim = image_dim * sum(2 if op == "concat" else 1 for op in operators)

    def forward(self, feats: PairFeatures) -> Tensor:
        b, a = feats.before_global, feats.after_global
        return torch.cat([GFF_OPERATORS[op](b, a) for op in self.operators], dim=-1)


class _TokenStem(nn.Module):
    """Shared projection of backbone tokens to the fusion width + learned 2-D position embedding."""

    def __init__(self, image_dim: int, num_tokens: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, width))
        side = math.isqrt(num_tokens)
        self.grid = (side, side) if side * side == num_tokens else (1, num_tokens)
        self.row = nn.Parameter(torch.randn(self.grid[0], 1, width) * 0.02)
        self.col = nn.Parameter(torch.randn(1, self.grid[1], width) * 0.02)
        self.num_tokens = num_tokens

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[1] != self.num_tokens:
            raise InputError(f"fusion: expected {self.num_tokens} tokens per image, got {tokens.shape[1]}")
        pos = (self.row + self.col).reshape(1, self.num_tokens, -1)
        return self.proj(tokens) + pos


class _CrossAttention(nn.Module):
    """Multi-head attention of queries `x` over keys/values `kv` (fused SDPA kernel)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        # nn.MultiheadAttention's init: without it attention starts near-uniform and learns slowly.
        for proj in (self.q, self.kv):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, kv: Tensor) -> Tensor:
        """x: (G*B, N, W) queries of G groups sharing kv: (B, M, W) (keys projected only once)."""
        (gb, n, w), b, m = x.shape, kv.shape[0], kv.shape[1]
        q = self.q(x).view(gb // b, b, n, self.heads, -1).transpose(2, 3)
        k, v = self.kv(kv).view(1, b, m, 2, self.heads, -1).permute(3, 0, 1, 4, 2, 5)
        y = F.scaled_dot_product_attention(
            q, k.expand(gb // b, -1, -1, -1, -1), v.expand(gb // b, -1, -1, -1, -1)
        )
        return self.out(y.transpose(2, 3).reshape(gb, n, w))


class _CrossLayer(nn.Module):
    """One dual-branch layer: x <- LN(x + Attn(q=x, k=v=after-before)); x <- LN(x + FFN(x)).

    One attention/FFN is shared by both branches (as in RSICCformer); the query tells them apart.
    Both branches run as one batch of 2B sequences: fewer, larger matrix products on a CPU.
    """

    def __init__(self, width: int, heads: int, dropout: float, ffn_ratio: int = 2) -> None:
        super().__init__()
        self.attn = _CrossAttention(width, heads)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_ratio * width), nn.GELU(), nn.Linear(ffn_ratio * width, width)
        )
        self.norm2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, before: Tensor, after: Tensor) -> tuple[Tensor, Tensor]:
        diff = after - before
        x = torch.cat([before, after])
        x = self.norm1(x + self.drop(self.attn(x, diff)))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x.chunk(2)


class _ResBlock(nn.Module):
    """Bottleneck residual block on the token grid: 1x1 -> 3x3 -> 1x1 (quarter width), ReLU.

    The 1x1 convolutions run as Linear layers on the (B, N, C) token layout and layer norm takes
    the place of batch norm: the same block as RSICCformer's, without layout copies and without
    batch statistics (so a pair's embedding never depends on the rest of its batch).
    """

    def __init__(self, channels: int, grid: tuple[int, int]) -> None:
        super().__init__()
        mid = max(1, channels // 4)
        self.grid = grid
        self.reduce = nn.Sequential(nn.Linear(channels, mid), nn.LayerNorm(mid), nn.ReLU(inplace=True))
        self.conv = nn.Conv2d(mid, mid, 3, padding=1)
        self.norm = nn.LayerNorm(mid)
        self.expand = nn.Sequential(nn.Linear(mid, channels), nn.LayerNorm(channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, C) tokens in grid order -> (B, N, C)."""
        n, (h, w) = x.shape[0], self.grid
        y = self.reduce(x)
        y = self.conv(y.transpose(1, 2).reshape(n, -1, h, w)).flatten(2).transpose(1, 2)
        y = self.expand(torch.relu(self.norm(y)))
        return torch.relu(x + y)


class _TokenFusion(Fusion):
    """Shared set-up of the token fusions: checked sizes and the token stem (projection + 2-D positions)."""

    uses_tokens = True
    spec = "tokens"

    def __init__(
        self,
        image_dim: int,
        num_tokens: int,
        width: int = 256,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_width(width, heads, layers)
        self.stem = _TokenStem(image_dim, num_tokens, width)
        self._build(width, layers, heads, dropout)

    def _build(self, width: int, layers: int, heads: int, dropout: float) -> None:
        """The layers after the stem (each token fusion its own)."""
        raise NotImplementedError


class TokenFeatureFusion(_TokenFusion):
    """TFF: dual-branch cross-attention to the token difference + multi-layer conv fusion."""

    spec = "tff"

    def _build(self, width: int, layers: int, heads: int, dropout: float) -> None:
        self.layers = nn.ModuleList(_CrossLayer(width, heads, dropout) for _ in range(layers))
        self.fuse = nn.ModuleList(_ResBlock(2 * width, self.stem.grid) for _ in range(layers))
        self.norm = nn.LayerNorm(2 * width)
        self.out_dim = 2 * width

    def forward(self, feats: PairFeatures) -> Tensor:
        before, after = self._tokens(feats)
        b, a = self.stem(torch.cat([before, after])).chunk(2)
        fused = 0
        for layer, fuse in zip(self.layers, self.fuse, strict=True):
            b, a = layer(b, a)
            fused = fused + fuse(torch.cat([b, a], dim=-1))  # every layer's fused map adds up
        return self.norm(fused.mean(1))  # type: ignore[union-attr]


class ConcatTransformerFusion(_TokenFusion):
    """Both dates' tokens in one sequence + temporal/spatial embeddings + CLS; CLS output."""

    spec = "concat-transformer:sequence"

    def _build(self, width: int, layers: int, heads: int, dropout: float) -> None:
        self.temporal = nn.Parameter(torch.randn(2, 1, width) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.blocks = nn.ModuleList(_SelfBlock(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, feats: PairFeatures) -> Tensor:
        before, after = self._tokens(feats)
        b, a = self.stem(torch.cat([before, after])).chunk(2)
        seq = torch.cat([self.cls.expand(b.shape[0], -1, -1), b + self.temporal[0], a + self.temporal[1]], 1)
        for block in self.blocks:
            seq = block(seq)
        return self.norm(seq[:, 0])


class ChannelConcatTransformerFusion(Fusion):
    """Dates joined along channels per grid cell, post-norm transformer encoder, mean pool."""

    uses_tokens = True
    #: The published recipe: encoder depth, heads, feed-forward width, dropout.
    LAYERS, HEADS, FFN, DROPOUT = 3, 16, 2048, 0.25

    def __init__(self, image_dim: int, num_tokens: int, width: int = 256) -> None:
        super().__init__()
        _check_width(width, self.HEADS, self.LAYERS)
        if width % 2:
            raise InputError(f"fusion 'concat-transformer:channel': width must be even, got {width}")
        self.spec = "concat-transformer:channel"
        self.num_tokens = num_tokens
        half = width // 2
        self.proj = (
            nn.Identity()
            if half == image_dim
            else nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, half))
        )
        layer = nn.TransformerEncoderLayer(
            width, self.HEADS, self.FFN, self.DROPOUT, activation="relu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, self.LAYERS, enable_nested_tensor=False)
        self.out_dim = width

    def forward(self, feats: PairFeatures) -> Tensor:
        before, after = self._tokens(feats)
        if before.shape[1] != self.num_tokens:
            raise InputError(f"fusion: expected {self.num_tokens} tokens per image, got {before.shape[1]}")
        b, a = self.proj(torch.cat([before, after])).chunk(2)
        return self.encoder(torch.cat([b, a], dim=-1)).mean(1)


class _SelfBlock(nn.Module):
    """Pre-norm transformer encoder block (self-attention + FFN), on the fused SDPA kernel.

    Same computation as nn.TransformerEncoderLayer(norm_first=True), several times faster to
    train on a CPU (no packed-projection transposes).
    """

    def __init__(self, width: int, heads: int, dropout: float, ffn_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _CrossAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_ratio * width), nn.GELU(), nn.Linear(ffn_ratio * width, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.drop(self.attn(y, y))
        return x + self.drop(self.ffn(self.norm2(x)))


def _check_width(width: int, heads: int, layers: int) -> None:
    if width <= 0 or heads <= 0 or width % heads:
        raise InputError(f"fusion: width ({width}) must be a positive multiple of heads ({heads})")
    if layers < 1:
        raise InputError(f"fusion: expected layers >= 1, got {layers}")


def parse_fusion_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """'gff:before+after+diff' -> ('gff', ('before','after','diff')); 'tff' -> ('tff', ());
    'concat-transformer' -> ('concat-transformer', (DEFAULT_CONCAT_LAYOUT,))."""
    text = (spec or "").strip().lower()
    kind, _, rest = text.partition(":")
    if kind == "tff" and not rest:
        return kind, ()
    if kind == "concat-transformer" and (rest or DEFAULT_CONCAT_LAYOUT) in CONCAT_LAYOUTS:
        return kind, (rest or DEFAULT_CONCAT_LAYOUT,)
    if kind == "gff":
        names = [_GFF_ALIASES.get(p.strip(), p.strip()) for p in (rest or "concat").split("+")]
        unknown = [n for n in names if n not in GFF_OPERATORS]
        if not unknown:
            return "gff", tuple(names)
        raise InputError(
            f"fusion {spec!r}: unknown GFF operator(s) {unknown}; expected '+'-joined names from "
            f"{sorted(GFF_OPERATORS)}, e.g. 'gff:before+after+diff'"
        )
    raise InputError(
        f"fusion {spec!r}: unknown spec; expected 'tff', 'concat-transformer[:sequence|:channel]' or "
        f"'gff:OP[+OP...]' "
        f"with OP in {sorted(GFF_OPERATORS)} (baselines: 'gff:after', 'gff:before', 'gff:diff')"
    )


def explicit_fusion_spec(spec: str, bare_layout: str = DEFAULT_CONCAT_LAYOUT) -> str:
    """`spec` with a concat-transformer's layout spelled out, so a stored config never depends on
    what a bare "concat-transformer" means at load time; other specs come back unchanged.

    `bare_layout` is what a bare "concat-transformer" means: the current default for specs given
    now, `LEGACY_CONCAT_LAYOUT` for checkpoint configs (older ones stored the bare spec).
    """
    parse_fusion_spec(spec)  # raises InputError for an unknown spec
    kind, _, rest = spec.strip().lower().partition(":")
    if kind != "concat-transformer":
        return spec
    if bare_layout not in CONCAT_LAYOUTS:
        raise InputError(f"fusion layout {bare_layout!r}: expected one of {CONCAT_LAYOUTS}")
    return f"{kind}:{rest or bare_layout}"


def build_fusion(
    spec: str,
    image_dim: int,
    num_tokens: int,
    *,
    width: int = 256,
    layers: int = 2,
    heads: int = 4,
    dropout: float = 0.1,
) -> Fusion:
    """Fusion module for `spec` over backbone features of width `image_dim` with `num_tokens` tokens."""
    kind, ops = parse_fusion_spec(spec)
    if kind == "gff":
        return GlobalFeatureFusion(ops, image_dim)
    if ops == ("channel",):
        return ChannelConcatTransformerFusion(image_dim, num_tokens, width=width)
    cls = TokenFeatureFusion if kind == "tff" else ConcatTransformerFusion
    return cls(image_dim, num_tokens, width=width, layers=layers, heads=heads, dropout=dropout)
