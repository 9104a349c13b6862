"""Paper-style accuracy tables for accuracy.py: every fusion variant and baseline, several seeds, mean ± std.

Backbone features are cached once per split (with patch tokens, so the TFF variants can use them) and
shared by every variant and seed; each run then only trains the fusion + heads and evaluates on the
test split with the strict full-gallery protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textitsr.evaluation.metrics import flatten_metrics, random_baseline

#: The variants of the tables: best GFF combinations, both token fusions, then the baselines.
DEFAULT_FUSIONS = (
    "gff:before+after+diff",
    "gff:after+diff",
    "gff:concat+absdiff",
    "tff",
    "concat-transformer",
    "gff:after",
    "gff:before",
    "gff:diff",
)
BASELINES = ("gff:after", "gff:before", "gff:diff")
COLUMNS = ("t2p_r1", "t2p_r5", "t2p_r10", "p2t_r1", "p2t_r5", "p2t_r10", "mR")


@dataclass
class BenchmarkConfig:
    root: Path
    source: str | None = "synthetic"
    fusions: tuple[str, ...] = DEFAULT_FUSIONS
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30
    batch_size: int = 128
    cache_dir: Path = Path("data/cache")
    out: Path = Path("data/benchmark")
    device: str = "auto"
    progress: bool = False
    #: One line per finished run (fusion, seed, test mR, epochs, seconds) on stdout.
    verbose: bool = False
    #: Backbone precision of the feature cache: "fp32" or "bf16" autocast (faster where the CPU has bf16).
    precision: str = "fp32"
    #: Extra TrainConfig fields for every run (lr, patience, weight_decay, ...).
    train_options: dict = field(default_factory=dict)
    #: Per-fusion TrainConfig overrides, e.g. {"tff": {"epochs": 12}}: token fusions cost ~10x an epoch.
    fusion_options: dict[str, dict] = field(default_factory=dict)


@dataclass
class BenchmarkRow:
    fusion: str
    runs: list[dict]  # flat metrics + "train_seconds" per seed

    def mean_std(self, key: str) -> tuple[float, float]:
        vals = np.array([r[key] for r in self.runs], dtype=float)
        return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def run_benchmark(config: BenchmarkConfig) -> tuple[list[BenchmarkRow], dict[str, float]]:
    """Train + evaluate every fusion x seed; returns the rows and the random baseline on the test split."""
    from textitsr.data.registry import open_source
    from textitsr.embedding.cache import build_or_load
    from textitsr.embedding.encode import resolve_device
    from textitsr.evaluation.evaluate import evaluate_cache
    from textitsr.models.textitsr import ModelConfig, TextITSR
    from textitsr.training.train import TrainConfig, fit, prepare_data, seed_everything

    source = open_source(config.root, config.source)
    kind = config.source or source.name
    # Cache once, with tokens, through one model: every variant below reuses these files.
    probe = TextITSR(ModelConfig(fusion="tff"))
    base = TrainConfig(
        root=config.root,
        out=config.out,
        source=kind,
        epochs=config.epochs,
        batch_size=config.batch_size,
        cache_dir=config.cache_dir,
        device=config.device,
        progress=config.progress,
        **config.train_options,
    )
    for split in ("train", "val", "test"):
        build_or_load(
            probe,
            source,
            split,
            config.cache_dir,
            tokens=True,
            precision=config.precision,
            progress=config.progress,
        )
    test = build_or_load(
        probe, source, "test", config.cache_dir, tokens=True, progress=False
    )
    encoders = {"image_encoder": probe.image_encoder, "text_encoder": probe.text_encoder}
    device = resolve_device(config.device)

    rows = []
    for fusion in config.fusions:
        runs = []
        for seed in config.seeds:
            seed_everything(seed)
            model = TextITSR(ModelConfig(fusion=fusion), **encoders)  # backbones shared, not reloaded
            run_cfg = TrainConfig(
                **{
                    **base.__dict__,
                    "fusion": fusion,
                    "seed": seed,
                    "out": config.out / f"{fusion.replace(':', '_').replace('+', '-')}-s{seed}",
                    **config.fusion_options.get(fusion, {}),
                }
            )
            data = prepare_data(model, source, run_cfg)
            t0 = time.perf_counter()
            result = fit(model.to(device), data, run_cfg, dataset={"kind": kind, "root": str(config.root)})
            seconds = time.perf_counter() - t0
            metrics = evaluate_cache(model, test)
            runs.append(
                {
                    **flatten_metrics(metrics),
                    "train_seconds": seconds,
                    "epochs": result.epochs_run,
                    "best_epoch": result.best_epoch,
                    "history": [{k: h[k] for k in ("epoch", "loss", "seconds", "val_mR") if k in h}
                                for h in result.history],
                }
            )
            if config.progress or config.verbose:
                print(
                    f"  {fusion} seed {seed}: test mR {runs[-1]['mR']:.2f}, {result.epochs_run} epochs "
                    f"(best {result.best_epoch}), {seconds:.0f} s",
                    flush=True,
                )
        rows.append(BenchmarkRow(fusion, runs))
    chance = random_baseline(
        test.caption_pair,
        None if (test.changed < 0).any() else test.changed.astype(bool),
        caption_text=test.caption_text,
    )
    return rows, chance


def markdown_table(rows: list[BenchmarkRow], chance: dict[str, float] | None = None) -> str:
    """Mean ± std over seeds of R@1/5/10 in both directions, mR, and training time."""
    head = (
        "| fusion | T→P R@1 | T→P R@5 | T→P R@10 | P→T R@1 | P→T R@5 | P→T R@10 | mR | train (s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for row in rows:
        cells = []
        for key in COLUMNS:
            m, s = row.mean_std(key)
            cells.append(f"{m:.1f} ± {s:.1f}")
        t, ts = row.mean_std("train_seconds")
        name = f"{row.fusion} (baseline)" if row.fusion in BASELINES else row.fusion
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {t:.0f} ± {ts:.0f} |")
    if chance is not None:
        lines.append("| random | " + " | ".join(f"{chance[k]:.1f}" for k in COLUMNS) + " | – |")
    return "\n".join(lines)
