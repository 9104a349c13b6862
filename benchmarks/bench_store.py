"""A small store for latency benchmarks when the demo's (`make run`) has not been built.

Query latency hardly depends on archive size at demo scale, so an untrained model over a few
hundred synthetic pairs measures the same import, load, encode and search costs in under a minute.
"""

from __future__ import annotations

import os
from pathlib import Path

from textitsr.config import DemoPaths


def bench_store(store: Path | None, workdir: Path, pairs: int = 200) -> Path:
    """`store` when given, else the demo store when built, else a small store built under `workdir`."""
    if store is not None:
        return store
    if (DemoPaths().store / "manifest.json").is_file():
        return DemoPaths().store
    built = workdir / "store"
    if (built / "manifest.json").is_file():
        return built
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from textitsr.data.registry import open_source
    from textitsr.index.build import build_store
    from textitsr.models.checkpoint import save_checkpoint
    from textitsr.models.textitsr import ModelConfig, TextITSR
    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    world = write_demo_world(
        workdir / "world", config=SyntheticWorldConfig(n_train=pairs // 2, n_val=pairs // 4,
                                                       n_test=pairs - pairs // 2 - pairs // 4, tile_size=64)
    )
    checkpoint = save_checkpoint(TextITSR(ModelConfig(fusion="gff:concat+absdiff")), workdir / "model")
    build_store(checkpoint, open_source(world, "synthetic"), built, progress=False)
    return built
