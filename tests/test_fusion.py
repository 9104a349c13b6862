"""Fusion of the two dates: GFF operators, TFF, concat-transformer, spec parsing."""

from __future__ import annotations

import pytest
import torch

from textitsr.errors import InputError
from textitsr.models.fusion import (
    GFF_OPERATORS,
    LEGACY_CONCAT_LAYOUT,
    ChannelConcatTransformerFusion,
    ConcatTransformerFusion,
    PairFeatures,
    build_fusion,
    explicit_fusion_spec,
    parse_fusion_spec,
)
from textitsr.models.heads import ProjectionHead

D, N, B = 24, 16, 5
SPECS = [
    "gff:after",
    "gff:before",
    "gff:diff",
    "gff:absdiff",
    "gff:sum",
    "gff:mean",
    "gff:product",
    "gff:concat",
    "gff:before+after+diff",
    "gff:concat+diff",
    "tff",
    "concat-transformer:sequence",
    "concat-transformer:channel",
]


@pytest.fixture
def feats() -> PairFeatures:
    g = torch.Generator().manual_seed(0)
    return PairFeatures(
        torch.randn(B, D, generator=g),
        torch.randn(B, D, generator=g),
        torch.randn(B, N, D, generator=g),
        torch.randn(B, N, D, generator=g),
    )


def small(spec: str):
    width = 32 if spec.endswith(":channel") else 16  # its 16 fixed heads need more than 1 channel each
    return build_fusion(spec, D, N, width=width, layers=2, heads=4, dropout=0.0).eval()


@pytest.mark.parametrize("spec", SPECS)
def test_every_spec_gives_out_dim_features(spec: str, feats: PairFeatures) -> None:
    fusion = small(spec)
    out = fusion(feats)
    assert out.shape == (B, fusion.out_dim)
    assert torch.isfinite(out).all()
    assert fusion.uses_tokens == (not spec.startswith("gff"))


def test_gff_operators_compute_what_they_say(feats: PairFeatures) -> None:
    b, a = feats.before_global, feats.after_global
    out = small("gff:before+after+diff+absdiff+product")(feats)
    expected = torch.cat([b, a, a - b, (a - b).abs(), a * b], dim=-1)
    assert torch.equal(out, expected)
    assert torch.equal(small("gff:concat")(feats), torch.cat([b, a], -1))
    assert small("gff:concat+diff").out_dim == 3 * D
    assert set(GFF_OPERATORS) >= {"concat", "sum", "diff", "absdiff", "product", "mean", "before", "after"}


def test_gff_needs_no_tokens(feats: PairFeatures) -> None:
    globals_only = PairFeatures(feats.before_global, feats.after_global)
    assert small("gff:diff")(globals_only).shape == (B, D)
    with pytest.raises(InputError, match="needs patch tokens"):
        small("tff")(globals_only)


def test_spec_parsing_and_aliases() -> None:
    assert parse_fusion_spec("gff:before+after+diff") == ("gff", ("before", "after", "diff"))
    assert parse_fusion_spec(" GFF:Difference+abs ") == ("gff", ("diff", "absdiff"))
    assert parse_fusion_spec("gff") == ("gff", ("concat",))
    assert parse_fusion_spec("tff") == ("tff", ())
    assert parse_fusion_spec("concat-transformer:sequence") == ("concat-transformer", ("sequence",))
    assert parse_fusion_spec("concat-transformer:channel") == ("concat-transformer", ("channel",))
    assert parse_fusion_spec("concat-transformer") == ("concat-transformer", ("channel",))
    assert isinstance(build_fusion("concat-transformer", D, N, width=32), ChannelConcatTransformerFusion)
    assert isinstance(build_fusion("concat-transformer:sequence", D, N), ConcatTransformerFusion)
    assert explicit_fusion_spec("concat-transformer") == "concat-transformer:channel"
    assert explicit_fusion_spec("concat-transformer", LEGACY_CONCAT_LAYOUT) == "concat-transformer:sequence"
    assert explicit_fusion_spec("Concat-Transformer:Sequence") == "concat-transformer:sequence"
    assert explicit_fusion_spec("gff:after+diff") == "gff:after+diff"
    for bad in ("", "gff:ratio", "transformer", "tff:x", "gff:after+", "concat-transformer:cls"):
        with pytest.raises(InputError, match="fusion"):
            build_fusion(bad, D, N)


def test_bad_transformer_shapes_are_input_errors() -> None:
    with pytest.raises(InputError, match="multiple of heads"):
        build_fusion("tff", D, N, width=10, heads=4)
    with pytest.raises(InputError, match="layers"):
        build_fusion("concat-transformer:sequence", D, N, layers=0)


@pytest.mark.parametrize("spec", ["tff", "concat-transformer:sequence", "concat-transformer:channel"])
def test_token_fusions_see_where_the_change_is(spec: str, feats: PairFeatures) -> None:
    """The same change at another grid cell gives another feature (position embeddings work),
    and swapping the dates changes the output (the fusion knows which date is which)."""
    torch.manual_seed(0)
    fusion = small(spec)
    base = feats[:1]
    moved = PairFeatures(
        base.before_global, base.after_global, base.before_tokens, base.after_tokens.roll(1, dims=1)
    )
    swapped = PairFeatures(base.after_global, base.before_global, base.after_tokens, base.before_tokens)
    with torch.no_grad():
        out, out_moved, out_swapped = fusion(base), fusion(moved), fusion(swapped)
    assert not torch.allclose(out, out_moved, atol=1e-4)
    assert not torch.allclose(out, out_swapped, atol=1e-4)


def test_tff_with_identical_dates_is_batch_independent(feats: PairFeatures) -> None:
    """Eval mode: each pair's output depends only on that pair (no batch-norm leakage)."""
    fusion = small("tff")
    with torch.no_grad():
        whole = fusion(feats)
        one = torch.cat([fusion(feats[i : i + 1]) for i in range(B)])
    assert torch.allclose(whole, one, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tff", "concat-transformer:sequence", "concat-transformer:channel"])
def test_token_fusions_train(spec: str, feats: PairFeatures) -> None:
    """A few steps of gradient descent move every parameter group and reduce a simple loss."""
    torch.manual_seed(0)
    fusion = small(spec).train()
    head = ProjectionHead(fusion.out_dim, 8, dropout=0.0)
    target = torch.nn.functional.normalize(torch.randn(B, 8), dim=-1)
    params = [*fusion.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(12):
        loss = (1 - (head(fusion(feats)) * target).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    fusion.eval()  # measured without dropout noise (the published channel variant drops 25%)
    with torch.no_grad():
        final = (1 - (head(fusion(feats)) * target).sum(-1)).mean().item()
    assert final < 0.5 * losses[0]
    assert all(p.grad is not None for p in fusion.parameters())


def test_pair_features_helpers(feats: PairFeatures) -> None:
    assert len(feats) == B
    part = PairFeatures.cat([feats[:2], feats[2:]])
    assert torch.equal(part.after_tokens, feats.after_tokens)
    half = feats.to("cpu", torch.float16)
    assert half.before_tokens.dtype == torch.float16 and half.before_global.shape == (B, D)


def test_cross_attention_matches_torch_multihead_attention() -> None:
    """The shared-keys attention used by TFF equals nn.MultiheadAttention run per date."""
    from textitsr.models.fusion import _CrossAttention

    torch.manual_seed(0)
    width, heads = 16, 4
    ours = _CrossAttention(width, heads)
    ref = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.kv.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
        before, after, diff = torch.randn(3, 3, 7, width).unbind(0)
        got = ours(torch.cat([before, after]), diff)
        expected = torch.cat([ref(before, diff, diff)[0], ref(after, diff, diff)[0]])
    assert torch.allclose(got, expected, atol=1e-5)


def test_channel_concat_follows_the_published_recipe() -> None:
    fusion = build_fusion("concat-transformer:channel", 1280, 49, width=2560)
    assert isinstance(fusion.proj, torch.nn.Identity)  # raw 2 x 1280 channels per grid cell
    layers = fusion.encoder.layers
    assert len(layers) == 3 and not layers[0].norm_first
    assert layers[0].self_attn.num_heads == 16 and layers[0].linear1.out_features == 2048
    assert layers[0].dropout.p == 0.25 and fusion.out_dim == 2560
