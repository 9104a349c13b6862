"""The interface every image and text backbone implements: frozen by default, last blocks unfreezable.

Why a module of its own: the backbones (`cnn_encoders`, `hf_encoders`) implement this interface and
the registry (`encoders`) builds them by name; with the interface apart, neither imports the other
both ways. Backbones are frozen by default (no gradients, eval mode) so features can be cached once.
"""

from __future__ import annotations

import os

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
