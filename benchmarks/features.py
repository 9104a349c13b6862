"""Feature-caching throughput (pairs/s) and peak RSS: EfficientNet-Lite0 at 224 px, fp32 vs bf16 autocast,
batch sizes and thread counts (target: >= 30 pairs/s on 2 cores). Each setting runs in its own process
so its peak RSS is its own. bf16 closeness to fp32 is reported as the minimum cosine similarity of the
global features (and tokens) over the measured pairs.

    .venv/bin/python benchmarks/features.py                       # default grid, 128 pairs per setting
    .venv/bin/python benchmarks/features.py --pairs 64 --batch-sizes 32 --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def one(pairs: int, batch_size: int, threads: int, precision: str, size: int) -> dict:
    import torch

    from textitsr.models.textitsr import ModelConfig, TextITSR

    torch.set_num_threads(threads)
    model = TextITSR(ModelConfig(fusion="tff"))
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (pairs, size, size, 3), dtype=np.uint8)
    after = rng.integers(0, 256, (pairs, size, size, 3), dtype=np.uint8)
    model.backbone_pair_features(before[:2], after[:2], tokens=True)  # warm-up
    model.bf16 = precision == "bf16"
    t0 = time.perf_counter()
    with torch.inference_mode():
        feats = model.backbone_pair_features(before, after, tokens=True, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    out = {
        "pairs_per_s": pairs / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if precision == "bf16":
        model.bf16 = False
        with torch.inference_mode():
            ref = model.backbone_pair_features(before, after, tokens=True, batch_size=batch_size)
        cos = torch.nn.functional.cosine_similarity
        out["min_cos_global"] = float(cos(feats.after_global, ref.after_global, dim=1).min())
        out["min_cos_tokens"] = float(
            cos(feats.after_tokens.flatten(1), ref.after_tokens.flatten(1), dim=1).min()
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--size", type=int, default=256, help="input tile side (LEVIR-CC: 256; resized to 224)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(**json.loads(args.one))))
        return
    rows = []
    for bs, th, prec in itertools.product(args.batch_sizes, args.threads, args.precisions):
        spec = {"pairs": args.pairs, "batch_size": bs, "threads": th, "precision": prec, "size": args.size}
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True, check=True
        )
        rows.append((spec, json.loads(proc.stdout.strip().splitlines()[-1])))
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    bf16 = "yes" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no (emulated)"
    print(
        f"# Feature caching, EfficientNet-Lite0 @224 (inputs {args.size} px), "
        f"{args.pairs} pairs per setting — "
        f"{platform.machine()} ({os.cpu_count()} CPUs, native bf16: {bf16}), {dt.date.today()}\n"
    )
    print("| batch | threads | precision | pairs/s | peak RSS (MB) | min cos vs fp32 (global / tokens) |")
    print("|---:|---:|---|---:|---:|---|")
    for spec, r in rows:
        cos = f"{r['min_cos_global']:.4f} / {r['min_cos_tokens']:.4f}" if "min_cos_global" in r else "–"
        print(
            f"| {spec['batch_size']} | {spec['threads']} | {spec['precision']} | {r['pairs_per_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {cos} |"
        )


if __name__ == "__main__":
    main()
