"""Checkpoints: a folder with `model.safetensors` (trainable weights) and `config.json`.

config.json holds the ModelConfig, the backbone shapes, the format and package versions, and an
optional `extra` dict (e.g. a training summary). Frozen backbones are not stored: they are rebuilt
from their names, so a checkpoint is small and a missing backbone is reported by name. Nothing is
ever unpickled: weights are safetensors only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from textitsr import __version__
from textitsr.atomic import atomic_dir
from textitsr.errors import CheckpointError, InputError
from textitsr.models.textitsr import ModelConfig, TextITSR
from textitsr.safe_read import read_json_file

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "checkpoint_id",
    "model_card",
    "type_reading_part",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: The entries of a checkpoint folder `save_checkpoint` writes; nothing else in the folder is touched.
OWNED_FILES = (WEIGHTS_FILE, CONFIG_FILE)


def save_checkpoint(
    model: TextITSR, folder: Path, extra: dict | None = None, *, keep: Iterable[str] = ()
) -> Path:
    """Write `model`'s trainable weights + config to `folder` atomically (replacing it); returns it.

    Only the files a checkpoint owns (weights, config) are replaced: every other entry of an
    existing folder (a user's results.csv or plots/, training's resumable state `last/`) carries over
    unchanged. `keep` names further entries to carry over even though this function writes them.
    """
    folder = Path(folder)
    keep = set(keep)
    if folder.is_dir() and not folder.is_symlink():
        keep.update(p.name for p in folder.iterdir() if p.name not in OWNED_FILES)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.trainable_state_dict().items()}
    config = {
        "format_version": FORMAT_VERSION,
        "textitsr_version": __version__,
        "model": model.config.to_dict(),
        "dims": model.dims(),
        "extra": extra or {},
    }
    try:
        text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as exc:
        raise InputError(f"checkpoint {folder}: `extra` must be JSON-serialisable: {exc}") from exc
    with atomic_dir(folder, keep=sorted(keep)) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    return folder


def read_checkpoint_config(folder: Path) -> dict:
    """Parsed and validated config.json of a checkpoint folder (cheap: loads no weights)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint {folder}: folder not found (expected a folder written by `textitsr train`)"
        )
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).exists():  # a FIFO or device in its place is named when read
            raise CheckpointError(f"checkpoint {folder}: missing {name}")
    path = folder / CONFIG_FILE
    try:
        # A checkpoint is the user's own choice: a link to it is followed (git-annex, DVC), a FIFO never.
        config = read_json_file(path, follow_symlinks=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"checkpoint {path}: expected a JSON object with a 'model' object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    return config


def load_checkpoint(folder: Path, device: str = "cpu") -> TextITSR:
    """Rebuild the model from config.json (backbones by name) and load the saved weights."""
    folder = Path(folder)
    config = read_checkpoint_config(folder)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (ValueError, TypeError) as exc:  # InputError is a ValueError
        raise CheckpointError(f"checkpoint {folder / CONFIG_FILE}: bad 'model' section: {exc}") from exc
    try:
        model = TextITSR(model_config)
    except InputError as exc:
        raise CheckpointError(
            f"checkpoint {folder}: cannot rebuild backbone (image {model_config.image_encoder!r}, "
            f"text {model_config.text_encoder!r}): {exc}"
        ) from exc
    saved_dims = config.get("dims") or {}
    mismatched = {k: (v, model.dims().get(k)) for k, v in saved_dims.items() if model.dims().get(k) != v}
    if mismatched:
        detail = ", ".join(f"{k}: saved {a}, backbone gives {b}" for k, (a, b) in mismatched.items())
        raise CheckpointError(f"checkpoint {folder}: backbone shapes differ from the saved ones ({detail})")
    _load_weights(model, folder / WEIGHTS_FILE)
    return model.to(device).eval()


def _load_weights(model: TextITSR, path: Path) -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable safetensors file: {exc}") from exc
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match the configured model "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    bad = [
        f"{k}: saved {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: tensor shapes differ from the config: {'; '.join(bad[:5])}"
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=False)


def checkpoint_id(folder: Path) -> str:
    """Short stable hash of the weights and the model config (ignores `extra` and versions)."""
    folder = Path(folder)
    config = read_checkpoint_config(folder)
    digest = hashlib.sha256()
    with open(folder / WEIGHTS_FILE, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(json.dumps({"model": config["model"], "dims": config.get("dims")}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def model_card(folder: Path) -> dict:
    """What is known about a checkpoint without loading its weights: the app shows it, and a store
    records it in its manifest (`model`) next to the checkpoint id it was built with."""
    config = read_checkpoint_config(folder)
    model = config["model"]
    return {
        "checkpoint_id": checkpoint_id(folder),
        "checkpoint": str(folder),
        "config": model,
        "image_encoder": model.get("image_encoder"),
        "text_encoder": model.get("text_encoder"),
        "fusion": model.get("fusion"),
        "embed_dim": model.get("embed_dim"),
        "textitsr_version": config.get("textitsr_version"),
        "training": config.get("extra") or {},
    }


def type_reading_part(folder: Path) -> slice | None:
    """Where a checkpoint's pair embeddings hold the change-type part, when that part still reads
    as `sqrt(p)` (`models.probes.type_reading`): the model has a type probe and no fine-tune folded a
    map into its pair head (`mix` is the identity). None otherwise. Reads the config and one tensor."""
    from safetensors import safe_open

    from textitsr.models.probes import is_identity, type_part

    part = type_part(read_checkpoint_config(folder)["model"])
    if part is None:
        return None
    with safe_open(str(Path(folder) / WEIGHTS_FILE), framework="pt") as fh:
        if "pair_head.mix" not in fh.keys():  # noqa: SIM118 - safe_open has no __contains__
            return None
        mix = fh.get_tensor("pair_head.mix")
    return part if is_identity(mix) else None
