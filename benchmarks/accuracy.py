"""Accuracy table on the synthetic demo benchmark: every fusion variant and baseline, 3 seeds.

Full run (writes the demo world into data/cache/bench-world if missing; ~1 h on 2 busy cores):

    .venv/bin/python benchmarks/accuracy.py

Quick check that everything runs (small world, 1 seed, few epochs; a few minutes):

    .venv/bin/python benchmarks/accuracy.py --small --seeds 0 --epochs 3 \\
        --fusions gff:before+after+diff tff gff:after
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import torch

from textitsr.config import DATA_DIR, DEMO_SEED
from textitsr.evaluation.benchmark import DEFAULT_FUSIONS, BenchmarkConfig, markdown_table, run_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=None, help="synthetic world (written if missing)")
    ap.add_argument("--small", action="store_true", help="a 160-pair world instead of the 1,800-pair demo")
    ap.add_argument("--fusions", nargs="+", default=list(DEFAULT_FUSIONS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--cache-dir", type=Path, default=DATA_DIR / "cache")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from textitsr.data.synthetic import SyntheticWorldConfig, write_demo_world

    world_cfg = SyntheticWorldConfig(n_train=100, n_val=20, n_test=40, tile_size=64) if args.small else None
    world = args.world or args.cache_dir / ("bench-world-small" if args.small else "bench-world")
    if not (world / "world.json").is_file():
        write_demo_world(world, seed=DEMO_SEED, config=world_cfg)
    t0 = time.perf_counter()
    rows, chance = run_benchmark(
        BenchmarkConfig(
            root=world,
            fusions=tuple(args.fusions),
            seeds=tuple(args.seeds),
            epochs=args.epochs,
            cache_dir=args.cache_dir,
            out=args.cache_dir / "bench-runs",
            device=args.device,
        )
    )
    print(
        f"# Synthetic benchmark (test split, full gallery) — seeds {args.seeds}, <= {args.epochs} epochs "
        f"with early stopping on val mR; {platform.machine()} ({os.cpu_count()} CPUs), "
        f"torch {torch.__version__}, "
        f"{dt.date.today()}, total {time.perf_counter() - t0:.0f} s\n"
    )
    print(markdown_table(rows, chance))


if __name__ == "__main__":
    main()
