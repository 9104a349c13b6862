"""The text-ITSR model: backbones (encoders), fusion of the two dates, projection heads, checkpoints."""

from textitsr.models.checkpoint import (
    checkpoint_id,
    load_checkpoint,
    model_card,
    read_checkpoint_config,
    save_checkpoint,
)
from textitsr.models.fusion import PairFeatures, build_fusion
from textitsr.models.textitsr import ModelConfig, TextITSR

__all__ = [
    "ModelConfig",
    "PairFeatures",
    "TextITSR",
    "build_fusion",
    "checkpoint_id",
    "load_checkpoint",
    "model_card",
    "read_checkpoint_config",
    "save_checkpoint",
]
