"""Time one training epoch on cached features (speed target: 10,000 pairs, GFF <= 30 s, TFF <= 3 min on
2 CPU cores). Features are random but of the real shapes (EfficientNet-Lite0: 1280-d globals, 7x7=49
tokens; MiniLM: 384-d text), read from memory-mapped float16 token files like the real cache.

    .venv/bin/python benchmarks/epoch_time.py --pairs 10000 --fusions gff:before+after+diff tff
    .venv/bin/python benchmarks/epoch_time.py --pairs 2000 --threads 2   # quick; also extrapolates to 10k
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from textitsr.embedding.cache import FeatureCache
from textitsr.training.train import TrainConfig, TrainData, fit

IMAGE_DIM, TOKENS, TEXT_DIM, CAPTIONS = 1280, 49, 384, 5


def random_cache(n: int, folder: Path, seed: int = 0) -> FeatureCache:
    rng = np.random.default_rng(seed)
    tokens = {}
    for name in ("before_tokens", "after_tokens"):
        arr = np.lib.format.open_memmap(
            folder / f"{name}.npy", mode="w+", dtype=np.float16, shape=(n, TOKENS, IMAGE_DIM)
        )
        for i in range(0, n, 500):
            arr[i : i + 500] = rng.random((min(500, n - i), TOKENS, IMAGE_DIM), dtype=np.float32)
        arr.flush()
        tokens[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
    n_texts = n * CAPTIONS
    return FeatureCache(
        pair_ids=[f"p{i}" for i in range(n)],
        texts=[f"t{i}" for i in range(n_texts)],
        caption_text=np.arange(n_texts),
        caption_offsets=np.arange(0, n_texts + 1, CAPTIONS),
        changed=(rng.random(n) > 0.5).astype(np.int8),
        before_global=rng.random((n, IMAGE_DIM), dtype=np.float32),
        after_global=rng.random((n, IMAGE_DIM), dtype=np.float32),
        text_features=rng.standard_normal((n_texts, TEXT_DIM), dtype=np.float32),
        **tokens,
    )


class _Stub(torch.nn.Module):
    """Backbone stand-in with the real shapes (only the trainable part is timed)."""

    def __init__(self, name: str, dim: int, tokens: int = 0) -> None:
        super().__init__()
        self.name, self.dim, self.num_tokens, self.image_size, self.unfrozen = name, dim, tokens, 224, False

    def unfreeze_last(self, n: int) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument(
        "--fusions", nargs="+", default=["gff:before+after+diff", "tff", "concat-transformer:sequence"]
    )
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from textitsr.models.textitsr import ModelConfig, TextITSR

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = random_cache(args.pairs, Path(tmp))
        val = np.arange(min(200, args.pairs))
        data = TrainData(cache, cache, np.arange(args.pairs), val, "holdout")
        for fusion in args.fusions:
            cfg = ModelConfig(fusion=fusion)
            model = TextITSR(
                cfg,
                image_encoder=_Stub(cfg.image_encoder, IMAGE_DIM, TOKENS),
                text_encoder=_Stub(cfg.text_encoder, TEXT_DIM),
            )
            result = fit(
                model,
                data,
                TrainConfig(
                    root=Path(tmp),
                    out=Path(tmp) / fusion.replace(":", "_"),
                    epochs=1,
                    batch_size=args.batch_size,
                    device="cpu",
                    progress=False,
                ),
            )
            epoch_s, cpu_s = result.history[0]["seconds"], result.history[0]["cpu_seconds"]
            rows.append(
                (
                    fusion,
                    epoch_s,
                    epoch_s * 10_000 / args.pairs,
                    cpu_s * 10_000 / args.pairs,
                    sum(p.numel() for p in model.parameters() if p.requires_grad),
                )
            )
    print(
        f"# Training epoch on cached features — {args.pairs} pairs, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} CPUs), torch {torch.__version__}, {dt.date.today()}\n"
    )
    print("CPU s = process CPU time summed over threads: on a shared machine wall time overstates the")
    print("epoch; with T busy threads, an idle machine needs about CPU s / T of wall time.\n")
    print(
        "| fusion | trainable params | epoch wall (s) | wall per 10k (s) | CPU s per 10k | target wall (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for fusion, epoch_s, per10k, cpu10k, params in rows:
        target = 30 if fusion.startswith("gff") else 180
        print(f"| {fusion} | {params / 1e6:.2f} M | {epoch_s:.1f} | {per10k:.1f} | {cpu10k:.1f} | {target} |")


if __name__ == "__main__":
    main()
