"""ANNEAL benchmark: pair -> pair mAP@20 on the synthetic test split against the number of labels.

A simulated analyst (similar = same change type) answers the pairs each strategy selects among the
TRAIN split items; after every round the base checkpoint is fine-tuned on all labels so far (pair
head only, from cached backbone features), and the model is scored on the TEST split:
pair -> pair mAP@20 by change type, and text <-> pair mR (which must not drop by more than 1).

    .venv/bin/python benchmarks/anneal.py --world data/demo/world --checkpoint data/demo/model \\
        --budgets 0,50,100,200,400 --seeds 0,1,2          # the full run (results/anneal.md)
    .venv/bin/python benchmarks/anneal.py --n-train 200 --n-test 100 --budgets 0,50,100 --seeds 0
                                                          # a quick development run (~3 min)

Prints a markdown table (mean +- std over seeds) and writes it with a plot (PNG) and the raw
numbers (JSON) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from textitsr.active.anneal import SelectionConfig, select_batch  # noqa: E402
from textitsr.active.finetune import (  # noqa: E402
    CaptionData,
    FinetuneConfig,
    HeadView,
    embed_items,
    finetune,
    fuse_features,
)
from textitsr.evaluation.metrics import (  # noqa: E402
    MAP_K,
    pair_map_at_k,
    retrieval_metrics,  # noqa: E402
)

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {
    "mgue": "MGUE + clustering",
    "bcgue": "BCGUE + clustering",
    "uncertainty": "uncertainty only (MGUE)",
    "random": "random",
}


class Split:
    """Fused features, change types and captions of one split, from the feature cache."""

    def __init__(self, model, cache) -> None:
        feats = cache.pair_features(np.arange(cache.n_pairs), tokens=model.uses_tokens)
        self.fused = fuse_features(model, feats)
        self.change_types = list(cache.change_type)
        self.caption_pair = cache.caption_pair
        self.caption_text = cache.caption_text
        self.text_features = torch.from_numpy(np.asarray(cache.text_features_all))
        self.changed = cache.changed == 1 if (cache.changed >= 0).all() else None


def score(view: HeadView, test: Split, text_emb: np.ndarray) -> dict[str, float]:
    emb = embed_items(view, test.fused)
    sim = text_emb[test.caption_text] @ emb.T
    m = retrieval_metrics(sim, test.caption_pair, test.changed, caption_text=test.caption_text)
    return {"map20": pair_map_at_k(emb, test.change_types, MAP_K), "mR": float(m["mR"])}


def run(
    strategy: str,
    seed: int,
    base,
    train: Split,
    test: Split,
    budgets: list[int],
    batch: int,
    ft: FinetuneConfig,
) -> list[dict]:
    """One strategy, one seed: label up to max(budgets), scoring the fine-tuned model at each budget."""
    with torch.no_grad():
        test_text = base.embed_text_features(test.text_features).numpy()
    captions = CaptionData(
        train.fused, train.text_features[train.caption_text], train.caption_pair, train.caption_text
    )
    model = copy.deepcopy(base)
    labels: list[tuple[int, int, bool]] = []
    rows = []
    emb = embed_items(HeadView(model), train.fused)
    round_ = 0
    for budget in sorted(budgets):
        if len(labels) >= budget:
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "labels": budget,
                    "similar_share": float("nan"),
                    **score(HeadView(model), test, test_text),
                }
            )
            continue
        while len(labels) < budget:  # rounds: uncertainty re-estimated from the growing labels
            config = SelectionConfig(strategy=strategy, batch=min(batch, budget - len(labels)))
            sel = select_batch(emb, labels, config, seed=seed * 1000 + round_)
            labels += [(int(a), int(b), train.change_types[a] == train.change_types[b]) for a, b in sel.pairs]
            round_ += 1
        # the model is updated at each budget (fine-tuning per batch is the app's loop; too slow here)
        model = copy.deepcopy(base)  # every update starts from the base checkpoint
        finetune(HeadView(model), train.fused, labels, captions, FinetuneConfig(**{**vars(ft), "seed": seed}))
        emb = embed_items(HeadView(model), train.fused)
        sim_share = float(np.mean([s for *_, s in labels]))
        rows.append(
            {
                "strategy": strategy,
                "seed": seed,
                "labels": budget,
                "similar_share": sim_share,
                **score(HeadView(model), test, test_text),
            }
        )
        print(
            f"  {strategy:12s} seed {seed} labels {budget:4d}: mAP@20 {rows[-1]['map20']:.2f}  "
            f"mR {rows[-1]['mR']:.2f}  similar {sim_share:.2f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def table(rows: list[dict], budgets: list[int], strategies: list[str]) -> str:
    def cell(strategy: str, budget: int, key: str) -> str:
        v = [r[key] for r in rows if r["strategy"] == strategy and r["labels"] == budget]
        return f"{np.mean(v):.2f} ± {np.std(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

    head = "| strategy | " + " | ".join(f"{b} labels" for b in budgets) + " |"
    out = ["pair -> pair mAP@20 (%) on the test split", "", head, "|---" * (len(budgets) + 1) + "|"]
    out += [f"| {LABELS[s]} | " + " | ".join(cell(s, b, "map20") for b in budgets) + " |" for s in strategies]
    out += ["", "text <-> pair mR (%) on the test split", "", head, "|---" * (len(budgets) + 1) + "|"]
    out += [f"| {LABELS[s]} | " + " | ".join(cell(s, b, "mR") for b in budgets) + " |" for s in strategies]
    return "\n".join(out)


def plot(rows: list[dict], strategies: list[str], path: Path) -> None:
    """mAP@20 against labels, mean +- std over seeds: PNG via matplotlib, else plotly HTML."""
    curves = {}
    for s in strategies:
        budgets = sorted({r["labels"] for r in rows if r["strategy"] == s})
        vals = [[r["map20"] for r in rows if r["strategy"] == s and r["labels"] == b] for b in budgets]
        curves[s] = (budgets, [float(np.mean(v)) for v in vals], [float(np.std(v)) for v in vals])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib comes with leafmap; without it keep an interactive HTML plot
        import plotly.graph_objects as go

        fig = go.Figure()
        for s, (x, y, e) in curves.items():
            fig.add_scatter(x=x, y=y, error_y={"type": "data", "array": e}, mode="lines+markers",
                            name=LABELS[s])
        fig.update_layout(xaxis_title="labelled pairs", yaxis_title="pair->pair mAP@20 (%), test split")
        fig.write_html(str(path.with_suffix(".html")))
        return
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for s, (x, y, e) in curves.items():
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=LABELS[s])
    ax.set_xlabel("labelled pairs")
    ax.set_ylabel("pair -> pair mAP@20 (%), test split")
    ax.set_title("ANNEAL on the synthetic benchmark (simulated analyst)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from textitsr.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, help="synthetic world root (default: generate one)")
    p.add_argument("--checkpoint", type=Path, help="base checkpoint (default: train one on the world)")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--fusion", default="gff:concat+diff", help="fusion of a checkpoint trained here")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--budgets", default="0,50,100,200,400")
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--strategies", default="mgue,bcgue,uncertainty,random")
    p.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    p.add_argument(
        "--work", type=Path, default=Path("data/bench-anneal"), help="world/checkpoint/cache folder"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from textitsr.data.world import MANIFEST, SyntheticSource
    from textitsr.embedding.cache import build_or_load
    from textitsr.models.checkpoint import load_checkpoint
    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    start = time.perf_counter()
    world = args.world or args.work / f"world-{args.n_train}-{args.n_test}"
    if args.world is None and not (world / MANIFEST).exists():
        write_demo_world(
            world,
            config=SyntheticWorldConfig(
                n_train=args.n_train, n_val=max(40, args.n_test // 4), n_test=args.n_test
            ),
        )
    checkpoint = args.checkpoint or args.work / f"model-{world.name}-{args.fusion.replace(':', '_')}"
    if args.checkpoint is None and not checkpoint.exists():
        from textitsr.training.train import TrainConfig, train

        train(
            TrainConfig(
                root=world,
                out=checkpoint,
                source="synthetic",
                fusion=args.fusion,
                epochs=args.epochs,
                batch_size=64,
                device="cpu",
                cache_dir=args.work / "cache",
                progress=False,
            )
        )
    base = load_checkpoint(checkpoint)
    source = SyntheticSource(world)
    train_split = Split(base, build_or_load(base, source, "train", args.work / "cache", progress=False))
    test_split = Split(base, build_or_load(base, source, "test", args.work / "cache", progress=False))
    budgets = [int(b) for b in args.budgets.split(",")]
    strategies = args.strategies.split(",")
    ft = FinetuneConfig(steps=args.steps)
    rows: list[dict] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for s in strategies:
            rows += run(s, seed, base, train_split, test_split, budgets, args.batch, ft)
    text = table(rows, budgets, strategies)
    header = (
        f"ANNEAL benchmark, {date.today()}, {platform.machine()} {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}; world {world.name} ({len(train_split.change_types)} train / "
        f"{len(test_split.change_types)} test pairs), checkpoint {checkpoint.name}, batch {args.batch}, "
        f"seeds {args.seeds}, fine-tune {ft.steps} steps; {time.perf_counter() - start:.0f} s"
    )
    print(header + "\n\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    from textitsr.atomic import atomic_write_text

    atomic_write_text(args.out / "anneal.md", header + "\n\n" + text + "\n")
    atomic_write_text(args.out / "anneal.json", json.dumps({"header": header, "rows": rows}, indent=1))
    plot(rows, strategies, args.out / "anneal.png")


if __name__ == "__main__":
    main()
