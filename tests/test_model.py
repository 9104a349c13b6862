"""TextITSR end to end: real default backbones on tiny images, every fusion, trainable part."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from textitsr.errors import InputError
from textitsr.models import ModelConfig, PairFeatures, TextITSR
from textitsr.models.encoders import build_image_encoder, build_text_encoder
from textitsr.models.textitsr import LOGIT_SCALE_MAX

SPECS = [
    "gff:after",
    "gff:before",
    "gff:diff",
    "gff:concat+diff",
    "gff:before+after+diff",
    "tff",
    "concat-transformer",
]


@pytest.fixture(scope="module")
def encoders() -> dict:
    """The real offline backbones, loaded once and shared (they stay frozen)."""
    return {
        "image_encoder": build_image_encoder("efficientnet-lite0"),
        "text_encoder": build_text_encoder("minilm-l6"),
    }


def small_config(fusion: str) -> ModelConfig:
    return ModelConfig(fusion=fusion, embed_dim=32, fusion_width=32, fusion_layers=1, fusion_heads=2)


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    after = before.copy()
    after[0, 10:30, 10:30] = 255  # a bright new "building" in the first pair only
    return before, after


@pytest.fixture(scope="module")
def features(encoders, images) -> PairFeatures:
    model = TextITSR(small_config("tff"), **encoders)
    return model.backbone_pair_features(*images)


@pytest.mark.parametrize("spec", SPECS)
def test_every_fusion_on_real_backbone_features(spec: str, encoders, features) -> None:
    torch.manual_seed(0)
    model = TextITSR(small_config(spec), **encoders)
    with torch.no_grad():
        emb = model.embed_pair_features(features)
    assert emb.shape == (2, 32) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert model.uses_tokens == (not spec.startswith("gff"))


@pytest.mark.parametrize("spec", ["gff:concat+diff", "concat-transformer"])
def test_encode_pairs(spec: str, encoders, images) -> None:
    model = TextITSR(small_config(spec), **encoders)
    emb = model.encode_pairs(*images)
    assert emb.shape == (2, 32) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])


def test_default_config_builds_tff(encoders, features) -> None:
    model = TextITSR(**encoders)
    assert model.config == ModelConfig() and model.config.fusion == "tff" and model.embed_dim == 256
    assert model.uses_tokens
    with torch.no_grad():
        assert model.embed_pair_features(features).shape == (2, 256)


def test_encode_texts(encoders) -> None:
    model = TextITSR(small_config("gff:diff"), **encoders)
    emb = model.encode_texts(["a new building appears", "nothing has changed", "a road is built"])
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.encode_texts([]).shape == (0, 32)
    with pytest.raises(InputError, match="list of strings"):
        model.encode_texts("one string")


def test_encode_pairs_is_batch_size_independent(encoders, images) -> None:
    model = TextITSR(small_config("tff"), **encoders)
    whole = model.encode_pairs(*images)
    one_by_one = model.encode_pairs(*images, batch_size=1)
    assert torch.allclose(whole, one_by_one, atol=1e-4)


def test_encode_pairs_equals_cached_feature_route(encoders, images, features) -> None:
    """Training on cached features and inference on pixels must give the same embedding."""
    model = TextITSR(small_config("tff"), **encoders)
    with torch.no_grad():
        cached = model.embed_pair_features(features)
    assert torch.allclose(model.encode_pairs(*images), cached, atol=1e-5)
    text_feats = model.backbone_text_features(["a new building"])
    assert text_feats.shape == (1, 384)
    with torch.no_grad():
        assert torch.allclose(
            model.encode_texts(["a new building"]), model.embed_text_features(text_feats), atol=1e-5
        )


def test_backbone_features_shapes(encoders, images, features) -> None:
    assert features.before_global.shape == (2, 1280) and features.after_tokens.shape == (2, 49, 1280)
    # the change in pair 0 shows in its features, pair 1 is identical at both dates
    assert not torch.allclose(features.before_global[0], features.after_global[0])
    assert torch.allclose(features.before_global[1], features.after_global[1])
    gff = TextITSR(small_config("gff:diff"), **encoders)
    globals_only = gff.backbone_pair_features(*images)
    assert globals_only.before_tokens is None
    assert gff.backbone_pair_features(*images, tokens=True).before_tokens.shape == (2, 49, 1280)
    empty = gff.backbone_pair_features(images[0][:0], images[1][:0])
    assert len(empty) == 0


def test_only_the_trainable_part_gets_gradients(encoders, features) -> None:
    model = TextITSR(small_config("tff"), **encoders).train()
    text_feats = torch.randn(2, 384)
    logits_per_pair, logits_per_text = model(features, text_feats)
    assert logits_per_pair.shape == (2, 2) and torch.equal(logits_per_text, logits_per_pair.T)
    loss = torch.nn.functional.cross_entropy(logits_per_pair, torch.arange(2))
    loss.backward()
    assert model.logit_scale.grad is not None
    assert all(p.grad is not None for p in model.fusion.parameters())
    assert all(p.grad is not None for p in model.text_head.parameters())
    backbone = [*model.image_encoder.parameters(), *model.text_encoder.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in backbone)
    assert not model.image_encoder.training and model.fusion.training
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p)
        for p in [
            *model.fusion.parameters(),
            *model.pair_head.parameters(),
            *model.text_head.parameters(),
            model.logit_scale,
        ]
    }
    saved = set(model.trainable_state_dict())
    assert saved and not any(k.startswith(("image_encoder.", "text_encoder.")) for k in saved)


def test_logit_scale_init_and_clamp(encoders) -> None:
    model = TextITSR(small_config("gff:diff"), **encoders)
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert math.isclose(model.scale().item(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert math.isclose(model.scale().item(), math.exp(LOGIT_SCALE_MAX), rel_tol=1e-5)


@pytest.mark.slow
def test_bf16_inference_stays_close_to_fp32(encoders, images) -> None:
    model = TextITSR(small_config("gff:concat+diff"), **encoders)
    fp32 = model.encode_pairs(*images)
    model.bf16 = True
    bf16 = model.encode_pairs(*images)
    assert bf16.dtype == torch.float32
    assert (fp32 * bf16).sum(1).min() > 0.97


def test_bad_inputs(encoders, images) -> None:
    model = TextITSR(small_config("gff:diff"), **encoders)
    before, after = images
    with pytest.raises(InputError, match="as many images"):
        model.encode_pairs(before, after[:1])
    with pytest.raises(InputError, match="uint8"):
        model.encode_pairs(before.astype(np.float32), after)
    with pytest.raises(InputError, match="needs patch tokens"):
        TextITSR(small_config("tff"), **encoders).embed_pair_features(
            PairFeatures(torch.zeros(1, 1280), torch.zeros(1, 1280))
        )
    with pytest.raises(InputError, match="config names"):
        TextITSR(ModelConfig(image_encoder="other"), **encoders)


def test_model_config_validation() -> None:
    with pytest.raises(InputError, match="fusion"):
        ModelConfig(fusion="gff:ratio")
    with pytest.raises(InputError, match="embed_dim"):
        ModelConfig(embed_dim=0)
    with pytest.raises(InputError, match="unknown field"):
        ModelConfig.from_dict({"fusion": "tff", "colour": "red"})
    config = ModelConfig(fusion="gff:after", embed_dim=64)
    assert ModelConfig.from_dict(config.to_dict()) == config
