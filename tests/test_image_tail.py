"""Fine-tuning the last stages of a CNN backbone on cached maps of its frozen stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textitsr.models.encoders import build_image_encoder, build_text_encoder
from textitsr.models.textitsr import ModelConfig, TextITSR

pytestmark = pytest.mark.slow  # loads real backbones


def test_tail_on_cached_maps_equals_the_full_backbone_and_trains() -> None:
    image, text = build_image_encoder("efficientnet-lite0"), build_text_encoder("minilm-l6")
    frozen = TextITSR(ModelConfig(fusion="gff:concat+absdiff"), image_encoder=image, text_encoder=text)
    rng = np.random.default_rng(0)
    before, after = (rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    reference = frozen.encode_pairs(before, after)
    state = {k: v for k, v in frozen.state_dict().items() if not k.startswith(("image_", "text_"))}

    image = build_image_encoder("efficientnet-lite0")
    tuned = TextITSR(
        ModelConfig(fusion="gff:concat+absdiff", unfreeze_image_blocks=2),
        image_encoder=image,
        text_encoder=text,
    )
    tuned.load_state_dict(state, strict=False)
    assert tuned.uses_tokens and tuned.dims()["trained_image_stages"] == 2
    cached = tuned.backbone_pair_features(before, after)  # what a feature cache stores
    assert cached.before_tokens.shape == (3, 49, 192)  # input map of the last MBConv block
    assert torch.allclose(tuned.encode_pairs(before, after), reference, atol=1e-4)

    tuned.train()
    tuned.embed_pair_features(cached).sum().backward()
    assert image.head.conv.weight.grad is not None and image.mbconv[15].project.conv.weight.grad is not None
    assert image.mbconv[14].project.conv.weight.grad is None
