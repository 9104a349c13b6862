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


#: The largest scene read, by its DECLARED width x height (a sparse 60000 x 60000 GeoTIFF is a few KB
#: on disk): 2**28 px is a 16384 x 16384 scene, larger than a Sentinel-2 or Landsat tile.
MAX_SCENE_PIXELS = 2**28

#: The largest annotation log read: a year of an analyst's answers is a few MB.
MAX_ANNOTATION_LOG_BYTES = 64 * 2**20

#: Backbone precision that `--precision auto` takes without measuring ("fp32" or "bf16"); unset or
#: empty: auto measures. Lets a whole test run (or a deployment) use one precision on any CPU.
PRECISION_ENV = "TEXTITSR_PRECISION"


def forced_precision() -> str | None:
    """The precision $TEXTITSR_PRECISION forces on "auto" (read at each call), or None."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower()
    if value and value not in ("fp32", "bf16"):
        raise ValueError(f"${PRECISION_ENV}={value!r}: expected fp32 or bf16 (or unset)")
    return value or None
