"""Joined heads: models trained apart become one model whose similarity is the mean of theirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from textitsr.errors import InputError
from textitsr.models import ModelConfig, TextITSR, load_checkpoint, save_checkpoint
from textitsr.models.encoders import build_image_encoder, build_text_encoder
from textitsr.models.ensemble import join_heads
from textitsr.models.probes import CAPTION_DIM, CHANGE_TYPES, type_part
from textitsr.models.text_side import load_text_side


@pytest.fixture(scope="module")
def encoders() -> dict:
    return {
        "image_encoder": build_image_encoder("efficientnet-lite0"),
        "text_encoder": build_text_encoder("minilm-l6"),
    }


def _seeded(config: ModelConfig, encoders: dict, seed: int) -> TextITSR:
    torch.manual_seed(seed)
    return TextITSR(config, **encoders).eval()


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    after = before.copy()
    after[0, 10:30, 10:30] = 255
    after[1] = 255 - after[1]
    return before, after


TEXTS = ["a new building appears", "the lake dries up", "there is no change"]


@pytest.mark.parametrize("probed", [False, True])
def test_joined_similarity_is_the_mean_of_the_models(encoders, probed: bool) -> None:
    shares = {"type_weight": 0.1, "caption_weight": 0.35} if probed else {}
    config = ModelConfig(fusion="gff:concat+absdiff", embed_dim=160 if probed else 48, **shares)
    models = [_seeded(config, encoders, seed) for seed in (0, 1, 2)]
    joined = join_heads(models).eval()
    probes = (len(CHANGE_TYPES) + CAPTION_DIM) if probed else 0
    assert joined.config.projections == 3
    assert joined.config.embed_dim == 3 * (config.embed_dim - probes) + probes
    before, after = _pairs()
    with torch.no_grad():
        sims = [m.encode_texts(TEXTS) @ m.encode_pairs(before, after).T for m in models]
        joined_sim = joined.encode_texts(TEXTS) @ joined.encode_pairs(before, after).T
    assert torch.allclose(joined_sim, torch.stack(sims).mean(0), atol=1e-5)
    assert not torch.allclose(sims[0], sims[1], atol=1e-3)  # the seeds did differ
    if probed:  # the probes' parts stay where every reader looks for them
        part = type_part(joined.config.to_dict())
        assert part.stop == joined.config.embed_dim - CAPTION_DIM


def test_a_joined_model_survives_a_checkpoint_round_trip(encoders, tmp_path: Path) -> None:
    config = ModelConfig(fusion="gff:concat+absdiff", embed_dim=48)
    joined = join_heads([_seeded(config, encoders, seed) for seed in (3, 4)]).eval()
    folder = save_checkpoint(joined, tmp_path / "joined")
    loaded = load_checkpoint(folder).eval()
    assert loaded.config == joined.config
    before, after = _pairs()
    with torch.no_grad():
        pairs = loaded.encode_pairs(before, after)
        assert torch.allclose(pairs, joined.encode_pairs(before, after), atol=1e-6)
        assert torch.allclose(loaded.encode_texts(TEXTS), joined.encode_texts(TEXTS), atol=1e-6)
    # a query-only process loads the text half alone and embeds queries alike
    assert torch.allclose(load_text_side(folder).encode_texts(TEXTS), joined.encode_texts(TEXTS), atol=1e-6)


def test_single_head_configs_are_stored_as_before() -> None:
    assert "projections" not in ModelConfig(fusion="gff:diff").to_dict()
    assert ModelConfig(fusion="gff:diff", projections=2).to_dict()["projections"] == 2
    with pytest.raises(InputError, match="projections must be >= 1"):
        ModelConfig(fusion="gff:diff", projections=0)


def test_models_that_differ_are_not_joined(encoders) -> None:
    gff = ModelConfig(fusion="gff:concat+absdiff", embed_dim=48)
    with pytest.raises(InputError, match="config differs"):
        other = ModelConfig(fusion="gff:diff", embed_dim=48)
        join_heads([_seeded(gff, encoders, 0), _seeded(other, encoders, 1)])
    with pytest.raises(InputError, match="at least 2 models"):
        join_heads([_seeded(gff, encoders, 0)])
    tff = ModelConfig(fusion="tff", embed_dim=32, fusion_width=32, fusion_layers=1, fusion_heads=2)
    with pytest.raises(InputError, match="fusion weights differ"):  # a trained fusion is not shared
        join_heads([_seeded(tff, encoders, 0), _seeded(tff, encoders, 1)])
    with pytest.raises(InputError, match="cannot be split among 3 heads"):
        TextITSR(ModelConfig(fusion="gff:diff", embed_dim=50, projections=3), **encoders)


def test_an_adapter_folds_into_a_joined_head(encoders) -> None:
    """A fine-tune's embedding adapter, folded into joined heads without probes, equals the adapter
    applied to the stored embeddings (as for a single head)."""
    from textitsr.active.finetune import EmbeddingAdapter, fold_adapter

    config = ModelConfig(fusion="gff:concat+absdiff", embed_dim=48)
    joined = join_heads([_seeded(config, encoders, seed) for seed in (5, 6, 7)]).eval()
    before, after = _pairs()
    feats = joined.backbone_pair_features(before, after)
    adapter = EmbeddingAdapter(joined.embed_dim, joined.logit_scale)
    with torch.no_grad():
        d = joined.embed_dim
        adapter.weight.copy_(torch.eye(d) + 0.1 * torch.randn(d, d))
        stored = joined.embed_pair_features(feats)
        want = torch.nn.functional.normalize(stored @ adapter.weight.T, dim=-1)
        fold_adapter(joined, adapter)
        assert torch.allclose(joined.embed_pair_features(feats), want, atol=1e-5)
