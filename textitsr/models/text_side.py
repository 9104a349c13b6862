"""The text half of a checkpoint: text encoder + text head, for processes that only embed queries.

A one-shot `textitsr search` needs nothing else; leaving out the image backbone and fusion saves
their construction and weights. It embeds texts exactly as the full `TextITSR` does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from textitsr.errors import CheckpointError, InputError
from textitsr.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config, type_reading_part
from textitsr.models.encoders import TextEncoder, build_text_encoder
from textitsr.models.probes import build_head, type_part
from textitsr.models.textitsr import ModelConfig

PREFIXES = ("text_encoder.", "text_head.")


class TextSide(nn.Module):
    """`encode_texts` of a TextITSR without its image side; pair queries are refused."""

    def __init__(self, config: ModelConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder or build_text_encoder(config.text_encoder, config.max_text_length)
        self.text_head = build_head(
            self.text_encoder.dim, config.embed_dim, config.head_hidden, config.dropout,
            type_weight=config.type_weight, caption_weight=config.caption_weight, sentences=True,
            projections=config.projections,
        )
        #: The pair side's type part where it still reads as sqrt(p) (a fine-tune folds a map into the
        #: pair head): `load_text_side` reads it from the checkpoint.
        self.pair_type_part = type_part(config.to_dict())
        self.eval()

    def encode_texts(self, texts: list[str], *, batch_size: int = 256) -> Tensor:
        """Captions/queries -> (B, embed_dim) L2-normalised CPU float32."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts: expected a list of strings")
        out = [torch.zeros(0, self.config.embed_dim)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                feats = self.text_encoder(list(texts[i : i + batch_size])).float()
                out.append(self.text_head(feats).float().cpu())
        return torch.cat(out)

    def encode_pairs(self, *args: object, **kwargs: object) -> Tensor:
        raise InputError(
            "this model was loaded for text queries only; pair and image queries need the full model"
        )


def load_text_side(folder: Path, device: str = "cpu") -> TextSide:
    """The text encoder and text head of a checkpoint, with its saved weights."""
    folder = Path(folder)
    config = read_checkpoint_config(folder)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {folder / CONFIG_FILE}: bad 'model' section: {exc}") from exc
    model = TextSide(model_config)
    path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(PREFIXES)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable safetensors file: {exc}") from exc
    expected = {k for k in model.state_dict() if k.startswith("text_head.")}
    missing = sorted(expected - set(state))
    if missing:
        raise CheckpointError(f"checkpoint {path}: text head weights missing ({missing[:3]})")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: text weights do not fit the configured model: {exc}"
        ) from exc
    if result.unexpected_keys:
        raise CheckpointError(f"checkpoint {path}: unexpected text weights {result.unexpected_keys[:3]}")
    model.pair_type_part = type_reading_part(folder)
    return model.to(device).eval()
