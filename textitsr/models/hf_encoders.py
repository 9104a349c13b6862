"""Any Hugging Face image or text model as a backbone (a hub id in the local cache, or a folder).

ViT-like or CLIP vision models for images, BERT-like or CLIP text models for texts (the text-ITSR
paper's setting). `local_files_only=True`: nothing is ever downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textitsr.errors import InputError
from textitsr.models.backbone import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_MAX_TEXT_LENGTH,
    DEFAULT_TEXT_ENCODER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageEncoder,
    TextEncoder,
    _freeze,
    _masked_mean,
)

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
        #: ONNX Runtime session answering inference calls instead of `model` (see `models.onnx_text`).
        self.runtime = None
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
        if self.runtime is not None and not torch.is_grad_enabled():
            feats = _masked_mean(self.runtime(batch), batch["attention_mask"])
        elif self.is_clip:
            feats = self.model(**batch).pooler_output
        else:
            feats = _masked_mean(self.model(**batch).last_hidden_state, batch["attention_mask"])
        return F.normalize(feats, dim=-1) if self.normalize else feats
