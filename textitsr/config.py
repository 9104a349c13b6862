"""Project-wide paths and defaults that more than one layer needs (one home for each default).

Layer-specific settings live in dataclasses inside their own module (e.g. the model config in
`textitsr.models.textitsr`, the training config in `textitsr.training.train`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("TEXTITSR_DATA", REPO_ROOT / "data"))

def user_cache_dir() -> Path:
    """Where derived files worth keeping between runs go: $TEXTITSR_CACHE_DIR, else the user's cache."""
    root = os.environ.get("TEXTITSR_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "textitsr"
    return Path(root).expanduser()


#: Where the shared research data lives during development and tests (never shipped).
SHARED_DATA_DIR = Path(os.environ.get("TEXTITSR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class DemoPaths:
    """Artifacts of the embedded demo: synthetic world -> trained model -> archive store."""

    root: Path = DATA_DIR / "demo"

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def checkpoint(self) -> Path:
        return self.root / "model"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"


#: Seed of the embedded demo world; train/val/test worlds derive disjoint seeds from it.
DEMO_SEED = 7
