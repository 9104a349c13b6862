"""TextITSR = frozen image/text backbones + fusion of the two dates + one projection head per modality.

Two ways in:
- raw inputs (`encode_pairs`, `encode_texts`): inference on uint8 RGB arrays / strings, batched
  internally, returns L2-normalised CPU float32 embeddings;
- cached backbone features (`embed_pair_features`, `embed_text_features`): the trainable part, used
  by training on features computed once with `backbone_pair_features` / `backbone_text_features`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn

from textitsr.errors import InputError
from textitsr.models.encoders import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_MAX_TEXT_LENGTH,
    DEFAULT_TEXT_ENCODER,
    ImageEncoder,
    StagedImageEncoder,
    TextEncoder,
    build_image_encoder,
    build_text_encoder,
    check_images,
)
from textitsr.models.fusion import LEGACY_CONCAT_LAYOUT, PairFeatures, build_fusion, explicit_fusion_spec
from textitsr.models.probes import build_head

__all__ = ["ModelConfig", "PairFeatures", "TextITSR", "LOGIT_SCALE_INIT", "LOGIT_SCALE_MAX"]

#: CLIP's temperature: initial logit scale 1/0.07, clamped to at most 100 when used.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a TextITSR (stored in a checkpoint's config.json)."""

    image_encoder: str = DEFAULT_IMAGE_ENCODER
    text_encoder: str = DEFAULT_TEXT_ENCODER
    fusion: str = "tff"
    embed_dim: int = 256
    fusion_width: int = 256
    fusion_layers: int = 2
    fusion_heads: int = 4
    dropout: float = 0.1
    head_hidden: int | None = None
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH
    unfreeze_image_blocks: int = 0
    unfreeze_text_blocks: int = 0
    #: Shares of the similarity given to the change-type and caption probes (`models.probes`),
    #: fitted on real labelled pairs after training; 0: no such probe.
    type_weight: float = 0.0
    caption_weight: float = 0.0
    #: Projection heads per modality, trained apart and joined (`heads.ProjectionEnsemble`); they
    #: share embed_dim less the probes' dims equally.
    projections: int = 1

    def __post_init__(self) -> None:
        # Raises InputError for unknown specs; spells out the concat-transformer layout so that a
        # saved config means the same fusion whatever a bare spec means later.
        self.fusion = explicit_fusion_spec(self.fusion)
        positive = (
            "embed_dim", "fusion_width", "fusion_layers", "fusion_heads", "max_text_length", "projections"
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise InputError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"model config: dropout must be in [0, 1), got {self.dropout}")
        for name in ("type_weight", "caption_weight"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise InputError(f"model config: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.type_weight + self.caption_weight >= 1.0:
            raise InputError(
                "model config: type_weight + caption_weight must leave the contrastive part a share, "
                f"got {self.type_weight} + {self.caption_weight}"
            )

    def to_dict(self) -> dict:
        """The stored form; `projections` only when above 1, so a single-head model's config (and
        every fingerprint taken of it) reads as it did before ensembles existed."""
        d = asdict(self)
        if d["projections"] == 1:
            del d["projections"]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """A stored (checkpoint) config. A bare "concat-transformer" there was written before the
        channel layout became the default, so it is read as the sequence layout it was trained with."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"model config: unknown field(s) {unknown}; expected some of {sorted(known)}")
        if isinstance(data.get("fusion"), str):
            data = {**data, "fusion": explicit_fusion_spec(data["fusion"], LEGACY_CONCAT_LAYOUT)}
        return cls(**data)


class TextITSR(nn.Module):
    """Text <-> bitemporal image pair retrieval model (text-ITSR)."""

    def __init__(
        self,
        config: ModelConfig | None = None,
        *,
        image_encoder: ImageEncoder | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> None:
        """Build from `config`; pass already loaded encoders to share them between models."""
        super().__init__()
        self.config = config = config or ModelConfig()
        self.image_encoder = image_encoder or build_image_encoder(config.image_encoder)
        self.text_encoder = text_encoder or build_text_encoder(config.text_encoder, config.max_text_length)
        for role, enc, want in (
            ("image", self.image_encoder, config.image_encoder),
            ("text", self.text_encoder, config.text_encoder),
        ):
            if enc.name != want:
                raise InputError(
                    f"{role} encoder: config names {want!r} but the given encoder is {enc.name!r}"
                )
        self.fusion = build_fusion(
            config.fusion,
            self.image_encoder.dim,
            self.image_encoder.num_tokens,
            width=config.fusion_width,
            layers=config.fusion_layers,
            heads=config.fusion_heads,
            dropout=config.dropout,
        )
        probes = {
            "type_weight": config.type_weight,
            "caption_weight": config.caption_weight,
            "projections": config.projections,
        }
        self.pair_head = build_head(
            self.fusion.out_dim, config.embed_dim, config.head_hidden, config.dropout, **probes
        )
        self.text_head = build_head(
            self.text_encoder.dim, config.embed_dim, config.head_hidden, config.dropout, **probes,
            sentences=True,
        )
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.image_encoder.unfreeze_last(config.unfreeze_image_blocks)
        self.text_encoder.unfreeze_last(config.unfreeze_text_blocks)
        #: Run backbones under bf16 autocast in encode_*/backbone_* (a runtime choice, not saved).
        self.bf16 = False
        #: Optional compiled copy of the frozen image backbone for fp32 inference (see
        #: `embedding.encode.compile_image_backbone`); used only where it computes the same thing.
        self.fast_image_encoder: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
        self.eval()

    @classmethod
    def from_config(cls, config: ModelConfig | None = None, **encoders) -> TextITSR:
        return cls(config, **encoders)

    # ---- properties ------------------------------------------------------------------------------

    @property
    def image_tail(self) -> StagedImageEncoder | None:
        """The image encoder when its last stages are fine-tuned: caches then hold the frozen
        stages' output map (as tokens) and the trained tail runs in `embed_pair_features`."""
        enc = self.image_encoder
        return enc if isinstance(enc, StagedImageEncoder) and enc.tail_size else None

    @property
    def uses_tokens(self) -> bool:
        """True when the fusion needs patch tokens (TFF variants) or the image tail needs its
        input map; False for GFF on a frozen backbone (globals only)."""
        return self.fusion.uses_tokens or self.image_tail is not None

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def dims(self) -> dict[str, int]:
        """Backbone shapes the trainable part depends on (checked when loading a checkpoint)."""
        dims = {
            "image_dim": self.image_encoder.dim,
            "num_tokens": self.image_encoder.num_tokens,
            "image_size": self.image_encoder.image_size,
            "text_dim": self.text_encoder.dim,
        }
        if self.image_tail is not None:  # caches of a fine-tuned tail hold another stage's output
            dims["trained_image_stages"] = self.image_tail.tail_size
        return dims

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped to <= 100, as in CLIP."""
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    # ---- trainable part (cached features) ---------------------------------------------------------

    def embed_pair_features(self, feats: PairFeatures) -> Tensor:
        """Fusion + pair head on backbone features -> (B, embed_dim) L2-normalised, on self.device."""
        if self.uses_tokens and (feats.before_tokens is None or feats.after_tokens is None):
            raise InputError(f"fusion {self.config.fusion!r}: needs patch tokens, got PairFeatures without")
        feats = feats.to(self.device, torch.float32)
        if self.image_tail is not None:
            feats = self._run_image_tail(feats)
        return self.pair_head(self.fusion(feats))

    def _run_image_tail(self, feats: PairFeatures) -> PairFeatures:
        """Frozen-stage maps (stored as (B, h*w, C) tokens) -> the fine-tuned stages' outputs."""
        maps = torch.cat([feats.before_tokens, feats.after_tokens])  # type: ignore[list-item]
        side = math.isqrt(maps.shape[1])
        grid = maps.transpose(1, 2).reshape(maps.shape[0], maps.shape[2], side, side)
        glob, tokens = self.image_tail.tail_outputs(grid.contiguous(memory_format=torch.channels_last))
        n = len(feats)
        return PairFeatures(glob[:n], glob[n:], tokens[:n], tokens[n:])

    def embed_text_features(self, text_feats: Tensor) -> Tensor:
        """Text head on backbone text features (B, text_dim) -> (B, embed_dim) L2-normalised."""
        return self.text_head(text_feats.to(self.device, torch.float32))

    def forward(self, feats: PairFeatures, text_feats: Tensor) -> tuple[Tensor, Tensor]:
        """CLIP-style logits: (pairs x texts, texts x pairs), scaled by the clamped temperature."""
        pair = self.embed_pair_features(feats)
        text = self.embed_text_features(text_feats)
        logits_per_pair = self.scale() * pair @ text.T
        return logits_per_pair, logits_per_pair.T

    # ---- frozen backbones -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            yield

    def _fast_backbone_applies(self, pixels: Tensor) -> bool:
        """The compiled backbone computes what eager fp32 does: no autocast, no gradients, on the CPU."""
        return (
            self.fast_image_encoder is not None
            and not self.bf16
            and not torch.is_grad_enabled()
            and pixels.device.type == "cpu"
            and not self.image_encoder.unfrozen
        )

    def _pair_features(self, before: np.ndarray, after: np.ndarray, tokens: bool) -> PairFeatures:
        glob, toks = self.backbone_image_features(before, after)  # one backbone call for both dates
        n = len(before)
        if not (tokens or self.image_tail is not None):
            return PairFeatures(glob[:n], glob[n:])
        return PairFeatures(glob[:n], glob[n:], toks[:n], toks[n:])

    def backbone_image_features(self, *images: np.ndarray) -> tuple[Tensor, Tensor]:
        """Frozen image backbone on uint8 RGB batches (concatenated, one call) -> float32 (globals
        (B, D), tokens (B, N, D)); with a fine-tuned tail: the frozen stages' map as both. What a
        pair's embedding needs of each of its images (`PairFeatures` joins two such results)."""
        enc = self.image_encoder
        with self._autocast():
            pixels = torch.cat([enc.preprocess(batch) for batch in images])
            if self.image_tail is not None:
                fmap = self.image_tail.frozen_map(pixels)
                glob, toks = fmap.mean((2, 3)), fmap.flatten(2).transpose(1, 2)
            elif self._fast_backbone_applies(pixels):
                glob, toks = self.fast_image_encoder(pixels)
            else:
                glob, toks = enc(pixels)
        return glob.float(), toks.float()

    def backbone_pair_features(
        self, before: np.ndarray, after: np.ndarray, *, tokens: bool | None = None, batch_size: int = 32
    ) -> PairFeatures:
        """Frozen image backbone on both dates -> PairFeatures on the CPU (float32), for caches.

        `tokens=None` keeps patch tokens only when this model's fusion uses them.
        """
        _check_pair_batch(before, after)
        want_tokens = self.uses_tokens if tokens is None else tokens
        parts = []
        with torch.no_grad():  # not inference_mode: cached features must stay usable in autograd
            for i in range(0, len(before), batch_size):
                feats = self._pair_features(
                    before[i : i + batch_size], after[i : i + batch_size], want_tokens
                )
                parts.append(feats.to("cpu"))
        if not parts:
            d, n = self.image_encoder.dim, self.image_encoder.num_tokens
            empty = torch.zeros(0, d)
            toks = torch.zeros(0, n, d) if want_tokens else None
            return PairFeatures(empty, empty.clone(), toks, None if toks is None else toks.clone())
        return PairFeatures.cat(parts)

    def backbone_text_features(self, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Frozen text backbone -> (B, text_dim) float32 on the CPU, for caches."""
        texts = _check_texts(texts)
        out = [torch.zeros(0, self.text_encoder.dim)]
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                with self._autocast():
                    out.append(self.text_encoder(texts[i : i + batch_size]).float().cpu())
        return torch.cat(out)

    # ---- inference on raw inputs -----------------------------------------------------------------

    def encode_pairs(self, before: np.ndarray, after: np.ndarray, *, batch_size: int = 32) -> Tensor:
        """uint8 RGB (B,H,W,3) before/after arrays -> (B, embed_dim) L2-normalised CPU float32."""
        _check_pair_batch(before, after)
        out = [torch.zeros(0, self.embed_dim)]
        with torch.inference_mode():
            for i in range(0, len(before), batch_size):
                feats = self._pair_features(
                    before[i : i + batch_size], after[i : i + batch_size], self.uses_tokens
                )
                out.append(self.embed_pair_features(feats).float().cpu())
        return torch.cat(out)

    def encode_texts(self, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Captions/queries -> (B, embed_dim) L2-normalised CPU float32."""
        texts = _check_texts(texts)
        out = [torch.zeros(0, self.embed_dim)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                with self._autocast():
                    feats = self.text_encoder(texts[i : i + batch_size]).float()
                out.append(self.embed_text_features(feats).float().cpu())
        return torch.cat(out)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimiser should update (fusion, heads, logit scale, unfrozen blocks)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ---- checkpoint support -------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Everything a checkpoint must store: fusion, heads, logit scale, and any unfrozen backbone.

        Frozen backbones are rebuilt from their names, so they are left out.
        """
        skip = tuple(
            f"{prefix}."
            for prefix, enc in (("image_encoder", self.image_encoder), ("text_encoder", self.text_encoder))
            if not enc.unfrozen
        )
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}


def _check_pair_batch(before: np.ndarray, after: np.ndarray) -> None:
    check_images(before, "before")
    check_images(after, "after")
    if len(before) != len(after):
        raise InputError(f"after: expected as many images as before ({len(before)}), got {len(after)}")


def _check_texts(texts: list[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InputError("texts: expected a list of strings")
    return list(texts)
