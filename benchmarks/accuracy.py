"""Accuracy table on the synthetic demo benchmark: every fusion variant and baseline, 3 seeds.

Full run (writes the demo world into data/bench-world if missing):

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
from fusion_table import DEFAULT_FUSIONS, BenchmarkConfig, markdown_table, run_benchmark

from textitsr.config import DATA_DIR, DEMO_SEED


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=None, help="synthetic world (written if missing)")
    ap.add_argument("--small", action="store_true", help="a 160-pair world instead of the 1,800-pair demo")
    ap.add_argument("--fusions", nargs="+", default=list(DEFAULT_FUSIONS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--cache-dir", type=Path, default=DATA_DIR / "cache")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--token-epochs", type=int, default=None,
                    help="max epochs of the token fusions (tff, concat-transformer); default --epochs")
    ap.add_argument("--patience", type=int, default=None, help="early-stopping patience (TrainConfig's)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (TrainConfig's)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="backbone precision of the feature cache")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--progress", action="store_true", help="per-epoch lines and progress bars (stderr)")
    ap.add_argument("--out-md", type=Path, default=None, help="also write the table (+ header) here")
    ap.add_argument("--out-json", type=Path, default=None, help="raw runs incl. learning curves")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None,
                    help="no training: print one table from earlier --out-json files (a later file's "
                         "rows replace an earlier file's rows of the same fusion)")
    args = ap.parse_args()
    if args.from_json:
        print(merged_table(args.from_json))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    train_options = {k: v for k, v in (("patience", args.patience), ("lr", args.lr)) if v is not None}
    token_fusions = ("tff", "concat-transformer")
    fusion_options = (
        {f: {"epochs": args.token_epochs} for f in args.fusions if f.split(":")[0] in token_fusions}
        if args.token_epochs else {}
    )

    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    world_cfg = SyntheticWorldConfig(n_train=100, n_val=20, n_test=40, tile_size=64) if args.small else None
    # Not inside --cache-dir: the cache fingerprint skips files under the cache dir, so a world there
    # would not invalidate its caches when regenerated.
    world = args.world or DATA_DIR / ("bench-world-small" if args.small else "bench-world")
    if not (world / "world.json").is_file():
        write_demo_world(world, seed=DEMO_SEED, config=world_cfg)
    t0 = time.perf_counter()
    rows, chance = run_benchmark(
        BenchmarkConfig(
            root=world,
            fusions=tuple(args.fusions),
            seeds=tuple(args.seeds),
            epochs=args.epochs,
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            out=args.cache_dir / "bench-runs",
            device=args.device,
            precision=args.precision,
            train_options=train_options,
            fusion_options=fusion_options,
            verbose=True,
            progress=args.progress,
        )
    )
    epochs = f"<= {args.epochs} epochs" + (
        f" (token fusions <= {args.token_epochs})" if args.token_epochs else ""
    )
    header = (
        f"# Synthetic benchmark (test split, full gallery) — seeds {args.seeds}, {epochs} "
        f"with early stopping on val mR (patience {args.patience or 'default'}), batch {args.batch_size}, "
        f"lr {args.lr or 'default'}, {args.precision} feature cache; {platform.machine()} "
        f"({os.cpu_count()} CPUs), torch {torch.__version__}, {dt.datetime.now():%Y-%m-%d %H:%M}, "
        f"load average at end {os.getloadavg()[0]:.1f}, total {time.perf_counter() - t0:.0f} s\n"
    )
    table = markdown_table(rows, chance)
    print(header)
    print(table)
    from textitsr.atomic import atomic_write_text

    if args.out_md:
        atomic_write_text(args.out_md, header + "\n" + table + "\n")
    if args.out_json:
        import json

        atomic_write_text(
            args.out_json,
            json.dumps({"header": header, "chance": chance,
                        "rows": [{"fusion": r.fusion, "runs": r.runs} for r in rows]}, indent=1),
        )


def merged_table(files: list[Path]) -> str:
    """One table from several --out-json runs (e.g. the token fusions re-run with more epochs)."""
    import json

    from fusion_table import BenchmarkRow

    rows: dict[str, BenchmarkRow] = {}
    chance = None
    for f in files:
        data = json.loads(Path(f).read_text())
        chance = data.get("chance") or chance
        for r in data["rows"]:
            rows[r["fusion"]] = BenchmarkRow(r["fusion"], r["runs"])
    return markdown_table(list(rows.values()), chance)


if __name__ == "__main__":
    main()
