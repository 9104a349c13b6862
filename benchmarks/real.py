"""Real-data benchmark on `../shared/data/realdev` (63 real pairs, for model selection only).

For each model (one or several checkpoints = seeds of one configuration, mean ± std):

- strict caption retrieval, every pair in the gallery: T->P and P->T R@1/5/10 and mR, with the
  mR of a random ranking;
- per change type with >= 4 pairs: the AP of 3 natural queries (fixed below, written once, not
  tuned per pair) ranking all pairs, against the random expectation (the type's prevalence), and
  the mean AP lift over random;
- change vs no change: AP of ranking all pairs by *dis*similarity to 3 "no change" queries;
- the same two AP tables for a model-free baseline ranking pairs by mean |after - before|.

    .venv/bin/python benchmarks/real.py --checkpoint data/demo/model
    .venv/bin/python benchmarks/real.py --checkpoint runs/a-s0 runs/a-s1 runs/a-s2 --label "tff (3 seeds)"
    # train each seed on a source, then evaluate (one row; backbone/fusion study):
    .venv/bin/python benchmarks/real.py --train-root data/demo/world --fusion gff:concat+absdiff \\
        --image-encoder geoembed-resnet18 --seeds 0 1 2 --out-json data/real-runs/geo.json
    # the same, adding the procedural world's train split, scored on realdev and the world's test split:
    .venv/bin/python benchmarks/real.py --train-root data/cache/realtrain \\
        --extra-train-root data/bench-world --synthetic-root data/bench-world --seeds 0 1 2 --epochs 8 \\
        --out-json data/real-runs/world.json
    # one table from several --out-json files:
    .venv/bin/python benchmarks/real.py --from-json data/real-runs/*.json

Leave-source-out (`--protocol leave-source-out`): the pool is realdev, realtrain's change pairs with
the LEVIR-CD samples (`evaluation.leave_source_out.derive_change_pairs`) and every `--pool` folder;
sources are dealt into `--folds` folds, and each `--variant` of the default recipe is trained per
fold and seed without the fold's sources (real and generated pairs made from them), then scored on
the fold's gallery against the same gallery's random ranking and pixel difference:

    .venv/bin/python benchmarks/real.py --protocol leave-source-out --pool ../realpool --folds 12 \
        --variant t1c4:real=3,types=0.1,captions=0.4,epochs=24,views=3,trainviews=2 \
        --variant t1c35:real=3,types=0.1,captions=0.35,epochs=24,views=3,trainviews=2 \
        --seeds 0 1 2 --join-seeds --out-json data/real-runs/lso.json
    .venv/bin/python benchmarks/real.py --protocol leave-source-out --from-json data/real-runs/lso*.json

`--join-seeds` adds a row per variant whose model per fold is its seeds' heads joined into one
(`models.ensemble`, the shipped default's form); `--reuse-runs` re-scores fold models trained before.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from textitsr.config import DATA_DIR, SHARED_DATA_DIR
from textitsr.data.pairs import SPLITS, BitemporalPair, PairSource, PairSourceBase
from textitsr.embedding.archive_change import (
    ARCHIVE_CHANGE_WEIGHT,
    ArchiveChanges,
    pair_changes_and_archives,
    pixel_changes,
)
from textitsr.embedding.hubness import HUB_WEIGHT
from textitsr.evaluation.realdev import (
    NO_CHANGE,
    LabelledFolderSource,
    average_precision,
    query_type_ap,
    type_counts,
)
from textitsr.training.probes import DEFAULT_CAPTION_ALPHA, DEFAULT_TYPE_C

#: Natural queries per change type: plain sentences an analyst would type, fixed before looking
#: at any model's rankings. "other" (a catch-all: lahars, tarps, damaged roofs) has no shared wording.
TYPE_QUERIES = {
    "buildings_built": (
        "many new buildings are built",
        "some houses are constructed on the bare land",
        "a new residential area appears",
    ),
    "buildings_demolished": (
        "the buildings are demolished",
        "the houses are destroyed",
        "several buildings have disappeared",
    ),
    "vegetation_cleared": (
        "the trees are cut down",
        "the forest is cleared",
        "the vegetation is removed",
    ),
    "water_expanded": (
        "the lake becomes larger",
        "the area is flooded",
        "water covers the land",
    ),
    "road_built": (
        "a new road is built",
        "a road is constructed through the area",
        "a new street appears",
    ),
}
NO_CHANGE_QUERIES = (
    "there is no change",
    "the scene remains the same",
    "the two images look the same",
)
MIN_PAIRS = 4
RETRIEVAL = ("t2p_r1", "t2p_r5", "t2p_r10", "p2t_r1", "p2t_r5", "p2t_r10", "mR")


def evaluate_model(
    model, source: LabelledFolderSource, cache_dir: Path, types: list[str], hub_weight: float = HUB_WEIGHT,
    change_weight: float = ARCHIVE_CHANGE_WEIGHT,
) -> dict:
    """One flat row: retrieval recalls (%), AP per type (0..1), mean lift, change-vs-none AP; the
    source read as one archive, as an index of it reads it."""
    from textitsr.embedding.cache import build_or_load

    cache = build_or_load(model, source, None, cache_dir, tokens=True, progress=False)
    archive = source_archive(source.root, None, None, cache.pair_ids, change_weight)
    return score_cache(model, cache, types, hub_weight, archive)


@functools.cache
def _source_changes(root: Path, kind: str | None, split: str | None) -> tuple[dict, dict]:
    """({pair_id: pixel change}, {pair_id: declared archive}) of a source (`kind` None: a labelled
    folder), read once per run however many checkpoints are scored on it."""
    from textitsr.data.registry import open_source

    source = LabelledFolderSource(root) if kind is None else open_source(root, kind)
    return pair_changes_and_archives(source.pairs(split))


def source_archive(
    root: Path, kind: str | None, split: str | None, pair_ids: list[str], weight: float
) -> ArchiveChanges:
    """How an index of the source reads `pair_ids`: each against its declared archive."""
    changes, archives = _source_changes(root, kind, split)
    return ArchiveChanges.of(changes, pair_ids, weight, archives)


def score_cache(
    model, cache, types: list[str], hub_weight: float = HUB_WEIGHT, archive: ArchiveChanges | None = None
) -> dict:
    """`evaluate_model` on a feature cache (the whole cache is the gallery; `hub_weight`: the
    hubness correction of pair -> text, 0 for plain cosines; `archive`: read the pairs relative to
    their archive, None: each on its own)."""
    from textitsr.embedding.encode import encode_texts
    from textitsr.evaluation.evaluate import embed_cache, evaluate_cache
    from textitsr.evaluation.metrics import flatten_metrics

    row = flatten_metrics(evaluate_cache(model, cache, hub_weight=hub_weight, archive=archive))
    pair_emb, _ = embed_cache(model, cache)
    if archive is not None:
        pair_emb = archive.calibrate(model, pair_emb)
    queries = {t: TYPE_QUERIES[t] for t in types}
    texts = [q for qs in queries.values() for q in qs]
    sim = encode_texts(model, texts + list(NO_CHANGE_QUERIES)) @ pair_emb.T
    aps = query_type_ap(sim[: len(texts)], cache.change_type, queries)
    counts = type_counts(cache.change_type)
    for t in types:
        row[f"ap:{t}"] = float(np.mean(aps[t]))
    lifts = [row[f"ap:{t}"] - counts[t] / cache.n_pairs for t in types]
    row["lift"] = float(np.mean(lifts)) if types else 0.0
    changed = cache.changed.astype(bool)
    row["ap:change"] = (
        float(np.mean([average_precision(-s, changed) for s in sim[len(texts) :]]))
        if 0 < changed.sum() < len(changed)
        else float("nan")
    )
    return row


def synthetic_row(
    model, root: Path, cache_dir: Path, hub_weight: float = HUB_WEIGHT,
    change_weight: float = ARCHIVE_CHANGE_WEIGHT,
) -> dict:
    """Strict retrieval on the synthetic world's test split (read as one archive), prefixed
    "syn:" so it sits in the same run row as the realdev numbers."""
    from textitsr.data.registry import open_source
    from textitsr.embedding.cache import build_or_load
    from textitsr.evaluation.evaluate import evaluate_cache
    from textitsr.evaluation.metrics import flatten_metrics

    source = open_source(root, "synthetic")
    cache = build_or_load(model, source, "test", cache_dir, progress=False)
    archive = source_archive(root, "synthetic", "test", cache.pair_ids, change_weight)
    metrics = flatten_metrics(evaluate_cache(model, cache, hub_weight=hub_weight, archive=archive))
    return {f"syn:{k}": metrics[k] for k in RETRIEVAL}


def pixel_baseline(source: LabelledFolderSource, types: list[str]) -> dict:
    pairs = list(source.pairs())
    score = np.array(list(pixel_changes(pairs).values()))
    changed = np.array([p.changed for p in pairs])
    return pixel_scores_row(score, [p.change_type for p in pairs], changed, types)


def pixel_scores_row(score: np.ndarray, labels: list, changed: np.ndarray, types: list[str]) -> dict:
    """AP per type, mean lift and change-vs-none AP of ranking pairs by mean |after - before|."""
    from textitsr.evaluation.realdev import relevance

    row = {f"ap:{t}": average_precision(score, relevance(labels, t)) for t in types}
    counts = type_counts(labels)
    row["lift"] = float(np.mean([row[f"ap:{t}"] - counts[t] / len(labels) for t in types])) if types else 0.0
    changed = np.asarray(changed, dtype=bool)
    row["ap:change"] = average_precision(score, changed) if 0 < changed.sum() < len(changed) else float("nan")
    return row


def chance_rows(source: LabelledFolderSource, types: list[str], cache_dir: Path, model) -> dict:
    from textitsr.embedding.cache import build_or_load

    return chance_of_cache(build_or_load(model, source, None, cache_dir, tokens=True, progress=False), types)


def chance_of_cache(cache, types: list[str]) -> dict:
    """What a random ranking scores on this gallery: retrieval (mean of 5 draws), AP = prevalence."""
    from textitsr.evaluation.metrics import random_baseline

    chance = random_baseline(cache.caption_pair, cache.changed.astype(bool), caption_text=cache.caption_text)
    counts = type_counts(cache.change_type)
    chance.update({f"ap:{t}": counts[t] / cache.n_pairs for t in types})
    chance["lift"] = 0.0
    chance["ap:change"] = float(cache.changed.astype(bool).mean())
    return chance


def _cell(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown(rows: list[dict], chance: dict, pixel: dict, types: list[str], counts: dict[str, int]) -> str:
    """Two tables: caption retrieval; AP per change type, mean lift and change vs no change."""
    out = [
        "| model | seeds | T→P R@1 | T→P R@5 | T→P R@10 | P→T R@1 | P→T R@5 | P→T R@10 | mR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['label']} | {len(r['runs'])} | "
            + " | ".join(_cell([x[k] for x in r["runs"]]) for k in RETRIEVAL)
            + " |"
        )
    out.append("| random | – | " + " | ".join(f"{chance[k]:.1f}" for k in RETRIEVAL) + " |")
    cols = [f"ap:{t}" for t in types] + ["lift", "ap:change"]
    heads = [f"{t} ({counts[t]})" for t in types] + [
        "mean AP lift",
        f"change vs none ({counts[NO_CHANGE]} none)",
    ]
    out += ["", "| model | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        out.append(
            f"| {r['label']} | " + " | ".join(_cell([x[c] for x in r["runs"]], digits=2) for c in cols) + " |"
        )
    out.append("| pixel difference | " + " | ".join(f"{pixel[c]:.2f}" for c in cols) + " |")
    out.append("| random (prevalence) | " + " | ".join(f"{chance[c]:.2f}" for c in cols) + " |")
    synthetic = [r for r in rows if all("syn:mR" in x for x in r["runs"])]
    if synthetic:
        out += [
            "",
            "Synthetic world, test split (400 pairs):",
            "",
            "| model | seeds | T→P R@1 | T→P R@5 | T→P R@10 | P→T R@1 | P→T R@5 | P→T R@10 | mR |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in synthetic:
            out.append(
                f"| {r['label']} | {len(r['runs'])} | "
                + " | ".join(_cell([x[f"syn:{k}"] for x in r["runs"]]) for k in RETRIEVAL)
                + " |"
            )
    return "\n".join(out)


class FirstPairs(PairSourceBase):
    """The first `limit` pairs of every split of a source: small training runs on 2 shared cores."""

    def __init__(self, source: PairSource, limit: int) -> None:
        self.source, self.limit = source, limit
        self.name = f"{source.name}-first{limit}"

    def __len__(self) -> int:
        return sum(self.count(s) for s in SPLITS)

    def count(self, split: str | None = None) -> int:
        return len(self) if split is None else min(self.limit, self.source.count(split))

    def paths(self) -> list[Path]:
        return self.source.paths()

    def fingerprint(self, split: str | None = None, exclude: Path | None = None) -> str:
        return self.source.fingerprint(split, exclude)

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        for s in SPLITS if split is None else (split,):
            yield from islice(self.source.pairs(s), self.limit)


class SpreadTrainPairs(FirstPairs):
    """Every `every`-th pair of the train split, other splits whole: a fixed subset that keeps the
    mix of parts and change types (generated data is stored grouped by part, so its first N train
    pairs are all of one kind) while validation stays comparable with full-data runs."""

    def __init__(self, source: PairSource, every: int) -> None:
        if every < 1:
            raise ValueError(f"--train-every: expected a positive integer, got {every}")
        self.source, self.every = source, every
        self.name = f"{source.name}-every{every}"

    def count(self, split: str | None = None) -> int:
        if split is None:
            return len(self)
        n = self.source.count(split)
        return -(-n // self.every) if split == "train" else n

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        for s in SPLITS if split is None else (split,):
            step = self.every if s == "train" else 1
            yield from islice(self.source.pairs(s), 0, None, step)


def train_checkpoints(args: argparse.Namespace) -> list[Path]:
    """Train one checkpoint per seed on --train-root (the cached features are shared by all seeds)."""
    from textitsr.data.registry import open_source
    from textitsr.embedding.cache import build_or_load
    from textitsr.evaluation.evaluate import resolve_device
    from textitsr.models.textitsr import ModelConfig, TextITSR
    from textitsr.training.train import TrainConfig, fit, prepare_data, seed_everything

    options: dict = {"image_encoder": args.image_encoder} if args.image_encoder else {}
    for item in args.model_option:
        key, _, value = item.partition("=")
        options[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
    source = open_source(args.train_root, args.train_kind)
    kind = args.train_kind or source.name
    if args.max_pairs:
        source = FirstPairs(source, args.max_pairs)
    if args.train_every > 1:
        source = SpreadTrainPairs(source, args.train_every)
    tag = args.label or f"{args.fusion}-{args.image_encoder or 'default'}"
    tag = tag.replace(":", "_").replace("+", "-")
    folders = []
    for seed in args.seeds:
        config = TrainConfig(
            root=args.train_root,
            extra_roots=args.extra_train_root,
            out=args.runs_dir / f"{tag.replace(' ', '_')}-s{seed}",
            source=kind,
            fusion=args.fusion,
            model_options=options,
            epochs=args.epochs,
            patience=args.patience,
            seed=seed,
            cache_dir=args.cache_dir,
            device=args.device,
            progress=False,
        )
        seed_everything(seed)
        model = TextITSR(ModelConfig(**{**options, "fusion": args.fusion}))
        extra = [open_source(root) for root in args.extra_train_root]
        for split in ("train", "val"):  # tokens cached once serve every fusion of this backbone
            build_or_load(model, source, split, args.cache_dir, tokens=True)
        for more in extra:
            build_or_load(model, more, "train", args.cache_dir, tokens=True)
        data = prepare_data(model, source, config, extra)
        t0 = time.perf_counter()
        dataset = {"kind": source.name, "root": str(args.train_root.resolve()),
                   "extra": [str(p.resolve()) for p in args.extra_train_root]}
        result = fit(model.to(resolve_device(args.device)), data, config, dataset=dataset)
        print(
            f"  trained {tag} seed {seed}: val mR {result.best_val_mR:.1f}, {result.epochs_run} epochs, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        folders.append(result.checkpoint)
    return folders


def machine_and_date() -> str:
    return (
        f"{platform.machine()} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.0f}), "
        f"torch {torch.__version__}, {dt.datetime.now():%Y-%m-%d %H:%M}"
    )


# ----------------------------------------------------------------------------- leave-source-out
#: Variants of the recipe compared under the protocol. "real=W": every real pool pair of the training
#: folds W times per epoch (0: generated data only); "type=L": the change-type prototype loss
#: (`training.real_mix`) with weight L; "types=W", "captions=W": the heads' change-type and caption
#: probes (`models.probes`) with these similarity shares, fitted on the training folds' real pairs
#: (strengths "type_c=C", "alpha=A"); "epochs=N": N epochs without early stopping; "dim=D": embed_dim;
#: "views=N": the probes are also fitted on the first N kinds of augmented views (`synth.views`)
#: of those pairs; "trainviews=N": the repeats of each real pair in training are its first N views;
#: "para=1": the views' captions are paraphrases of the pairs' (`synth.paraphrase`); "kinds=a+b+...":
#: the order of the view kinds that "views" and "trainviews" count in (default: `VIEW_KINDS`);
#: "balance=P": each pair weighs n_source ** -P in the probes' fit (`training.probes.source_balance`).
VARIANT_OPTIONS = (
    "real=W,type=L,types=W,captions=W,type_c=C,alpha=A,epochs=N,dim=D,views=N,trainviews=N,para=0|1,"
    "kinds=K+K,balance=P"
)


def parse_variant(spec: str) -> tuple[str, dict]:
    name, _, opts = spec.partition(":")
    out = {"real": 0, "type": 0.0, "types": 0.0, "captions": 0.0, "type_c": DEFAULT_TYPE_C,
           "alpha": DEFAULT_CAPTION_ALPHA, "epochs": 0, "dim": 0, "views": 0, "trainviews": 0, "para": 0,
           "kinds": "", "balance": 0.0}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        if key not in out:
            raise SystemExit(
                f"--variant {spec!r}: unknown option {key!r}; expected {VARIANT_OPTIONS.replace(',', ', ')}"
            )
        out[key] = type(out[key])(value)
    from textitsr.synth.views import VIEW_KINDS

    kinds = tuple(out["kinds"].split("+")) if out["kinds"] else VIEW_KINDS
    unknown = [k for k in kinds if k not in VIEW_KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise SystemExit(
            f"--variant {spec!r}: kinds must name distinct view kinds of {', '.join(VIEW_KINDS)}"
        )
    out["kinds"] = kinds
    return name, out


def subset_cache(cache, idx: np.ndarray):
    """An in-memory cache of pairs `idx` of `cache` (globals only; texts shared)."""
    from textitsr.embedding.cache import FeatureCache

    idx = np.asarray(idx, dtype=np.int64)
    off = cache.caption_offsets
    caps = [cache.caption_text[off[i] : off[i + 1]] for i in idx]
    return FeatureCache(
        pair_ids=[cache.pair_ids[i] for i in idx],
        texts=cache.texts,
        caption_text=np.concatenate(caps) if caps else np.zeros(0, np.int64),
        caption_offsets=np.concatenate([[0], np.cumsum([len(c) for c in caps])]).astype(np.int64),
        changed=np.asarray(cache.changed)[idx],
        before_global=np.asarray(cache.before_global)[idx],
        after_global=np.asarray(cache.after_global)[idx],
        text_features=cache.text_features_all,
        change_type=[cache.change_type[i] for i in idx],
    )


def gallery_types(labels: list) -> list[str]:
    counts = type_counts(labels)
    return [t for t in TYPE_QUERIES if counts.get(t, 0) >= MIN_PAIRS]


def load_pool(model, folders: list[Path], cache_dir: Path):
    """(pool cache, source per pair, pixel-difference score per pair) over the pool folders."""
    from textitsr.training.real_mix import load_pool as load

    pool, sources = load(model, folders, cache_dir)
    pixel = []
    for folder in folders:  # pairs in file order, as in the pool cache
        pixel += list(pixel_changes(LabelledFolderSource(folder).pairs()).values())
    return pool, sources, np.array(pixel)


def load_generated(model, shared: Path, cache_dir: Path):
    """The default recipe's generated data (made if missing) as caches with type and source per pair."""
    from textitsr.training.default_model import DEFAULT_DATA_DIR, DefaultRecipe, generated_data
    from textitsr.training.real_mix import load_generated as load

    recipe = DefaultRecipe()
    _, extra_roots, _ = generated_data(shared, DEFAULT_DATA_DIR, recipe, echo=lambda _: None)
    return (recipe, *load(model, DEFAULT_DATA_DIR, extra_roots, cache_dir))


def source_rows(
    model, cache, idx: np.ndarray, sources: list[str], pixel: np.ndarray, hub_weight: float = HUB_WEIGHT,
    change_weight: float = ARCHIVE_CHANGE_WEIGHT,
) -> dict[str, dict]:
    """Per source of a gallery: its own-gallery retrieval and chance, change-vs-none and
    buildings_built AP of the model, of pixel difference and of chance (where defined); each
    source's gallery is one archive."""
    from textitsr.evaluation.realdev import relevance

    out = {}
    for s in sorted({sources[i] for i in idx}):
        sub = np.array([i for i in idx if sources[i] == s])
        c = subset_cache(cache, sub)
        if not c.changed.astype(bool).any():  # only unchanged pairs: no caption query to rank them by
            nan = {"mR": float("nan"), "ap:change": float("nan")}
            out[s] = {"n": len(sub), "model": nan, "chance": nan, "pixel": nan}
            continue
        types = [t for t in ("buildings_built",) if 0 < relevance(c.change_type, t).sum() < len(sub)]
        row = score_cache(model, c, types, hub_weight, ArchiveChanges(pixel[sub], None, change_weight))
        chance = chance_of_cache(c, types)
        pix = pixel_scores_row(pixel[sub], c.change_type, c.changed.astype(bool), types)
        out[s] = {"n": len(sub), "model": row, "chance": chance, "pixel": pix}
    return out


class FoldScoring:
    """What scoring a model on one fold needs: its probes' training parts and weights, its gallery,
    and the whole pool (with each pair's source and pixel-difference score) for the per-source rows.
    Each source is one archive of the gallery (as if each were indexed on its own)."""

    def __init__(
        self, opt: dict, parts: list, balance: np.ndarray, gallery, types: list[str], idx: np.ndarray,
        pool_sources_pixel: tuple, hub_weight: float, change_weight: float = ARCHIVE_CHANGE_WEIGHT,
    ) -> None:
        self.opt, self.parts, self.balance = opt, parts, balance
        self.gallery, self.types, self.idx = gallery, types, idx
        self.pool, self.sources, self.pixel = pool_sources_pixel
        self.hub_weight, self.change_weight = hub_weight, change_weight

    def score(self, model) -> tuple[dict, dict]:
        """Fit the model's probes (on the fold's training pool pairs only), then score the gallery:
        (the gallery's row, the rows per source)."""
        from textitsr.training.probes import fit_probes

        if self.opt["types"] or self.opt["captions"]:
            weights = [self.balance] * len(self.parts)
            fit_probes(model, self.parts, self.opt["type_c"], self.opt["alpha"], weights)
        archive = ArchiveChanges(self.pixel[self.idx], np.array(self.sources)[self.idx], self.change_weight)
        row = score_cache(model, self.gallery, self.types, self.hub_weight, archive)
        return row, source_rows(
            model, self.pool, self.idx, self.sources, self.pixel, self.hub_weight, self.change_weight
        )


def record_run(
    results: dict, spec: str, variant: str, k: int, seed: int, scored: tuple[dict, dict], t0: float
) -> None:
    row, per_source = scored
    results["runs"].append(
        {"variant": variant, "spec": spec, "fold": k, "seed": seed, "row": row, "sources": per_source}
    )
    print(
        f"  {variant} fold {k} seed {seed}: mR {row['mR']:.1f} lift {row['lift']:.2f} "
        f"change {row['ap:change']:.2f} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )


def leave_source_out(args: argparse.Namespace) -> None:
    """Train each variant per fold and seed without the fold's sources; score on the fold's gallery."""
    from textitsr.evaluation.leave_source_out import DERIVED_DIR, derive_change_pairs, group_folds
    from textitsr.models.checkpoint import load_checkpoint
    from textitsr.models.ensemble import join_heads
    from textitsr.models.textitsr import ModelConfig, TextITSR
    from textitsr.synth.views import VIEW_KINDS
    from textitsr.training.probes import source_balance
    from textitsr.training.real_mix import MixedData, TypePrototypeLoss, load_views
    from textitsr.training.train import TrainConfig, fit, seed_everything

    shared = args.shared
    folders = [args.root, derive_change_pairs(shared, args.cache_dir / DERIVED_DIR, against=[args.root])]
    for pool in args.pool:
        if (pool / "pairs.jsonl").is_file() and any((pool / "before").glob("*")):
            folders.append(pool)
        else:
            print(f"  --pool {pool}: no pairs.jsonl/before yet, left out", flush=True)
    base = TextITSR(ModelConfig(fusion=args.fusion))
    pool, sources, pixel = load_pool(base, folders, args.cache_dir)
    recipe, train, train_src, val, val_src = load_generated(base, shared, args.cache_dir)
    mixed = MixedData(train, train_src, val, val_src, pool, sources)
    options = [parse_variant(v)[1] for v in args.variant]
    views_by_para = {}  # {paraphrased: {view kind: (view cache, sources)}}
    for para in sorted({bool(o["para"]) for o in options}):
        used = [o["kinds"][: max(o["views"], o["trainviews"])] for o in options if bool(o["para"]) == para]
        kinds = tuple(k for k in VIEW_KINDS if any(k in u for u in used))
        loaded = load_views(base, folders, args.cache_dir, kinds, paraphrased=para)
        views_by_para[para] = dict(zip(kinds, loaded, strict=True))
    folds = group_folds(sources, args.folds)
    print(f"  pool: {pool.n_pairs} pairs, {len(set(sources))} sources, folds {folds}", flush=True)
    results = {
        "folds": [list(f) for f in folds],
        "n_pairs": pool.n_pairs,
        "runs": [],
        "folders": [str(f) for f in folders],
    }
    for fold in folds:
        idx = np.array([i for i, s in enumerate(sources) if s in fold])
        gallery = subset_cache(pool, idx)
        types = gallery_types(gallery.change_type)
        results.setdefault("fold_info", []).append(
            {
                "sources": list(fold),
                "n": len(idx),
                "types": types,
                "counts": type_counts(gallery.change_type),
                "chance": chance_of_cache(gallery, types),
                "pixel": pixel_scores_row(
                    pixel[idx], gallery.change_type, gallery.changed.astype(bool), types
                ),
            }
        )
    for spec in args.variant:
        name, opt = parse_variant(spec)
        by_kind = views_by_para[bool(opt["para"])]
        views = [by_kind[k] for k in opt["kinds"][: max(opt["views"], opt["trainviews"])]]
        for k, fold in enumerate(folds):
            idx = np.array([i for i, s in enumerate(sources) if s in fold])
            gallery = subset_cache(pool, idx)
            types = results["fold_info"][k]["types"]
            # the probes are fitted on the fold's training pool pairs (and their views) only
            train_idx = np.array([i for i, s in enumerate(sources) if s not in fold])
            parts = [(pool, train_idx)] + [(c, train_idx) for c, _ in views[: opt["views"]]]
            balance = source_balance([sources[i] for i in train_idx], opt["balance"])
            scoring = FoldScoring(
                opt, parts, balance, gallery, types, idx, (pool, sources, pixel), args.hub_weight,
                args.archive_change_weight,
            )
            fold_models = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                seed_everything(seed)
                out = args.runs_dir / f"lso-{name}-f{k}-s{seed}"
                if args.reuse_runs and (out / "config.json").is_file():
                    model = load_checkpoint(out)  # trained by an earlier run: re-fit probes, re-score
                else:
                    dims = {"embed_dim": opt["dim"]} if opt["dim"] else {}
                    shares = {"type_weight": opt["types"], "caption_weight": opt["captions"]}
                    model = TextITSR(ModelConfig(fusion=args.fusion, **shares, **dims))
                    with_views = dataclasses.replace(
                        mixed, views=tuple(c for c, _ in views[: opt["trainviews"]])
                    )
                    data, labels = with_views.fold(set(fold), opt["real"])
                    aux = TypePrototypeLoss(model, labels, opt["type"]) if opt["type"] else None
                    config = TrainConfig(
                        root=DATA_DIR / "cache" / "realtrain",
                        out=out,
                        fusion=args.fusion,
                        epochs=opt["epochs"] or recipe.epochs,
                        patience=opt["epochs"] or recipe.patience,  # a longer run: no early stop
                        batch_size=recipe.batch_size,
                        lr=recipe.lr,
                        seed=seed,
                        cache_dir=args.cache_dir,
                        progress=False,
                    )
                    fit(model, data, config, aux_loss=aux)
                record_run(results, spec, name, k, seed, scoring.score(model), t0)
                fold_models.append(model)
            if args.join_seeds and len(fold_models) > 1:  # the seeds' heads joined into one model
                t0 = time.perf_counter()
                scored = scoring.score(join_heads(fold_models))
                record_run(results, spec, f"{name}-joined", k, args.seeds[0], scored, t0)
    results["stamp"] = machine_and_date()
    write_lso(results, args)


def _num(value: float, digits: int = 2) -> str:
    return "–" if value != value else f"{value:.{digits}f}"


def _mean_sd(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    v = np.asarray([x for x in values if x == x], dtype=float) * scale
    if not len(v):
        return "–"
    return f"{v.mean():.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def lso_markdown(results: dict) -> str:
    """Tables: mean over folds per variant; per fold; per type; per source."""
    runs, info = results["runs"], results["fold_info"]
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    nf = len(info)

    def fold_mean(variant: str, key: str, seed: int) -> float:
        vals = [
            r["row"].get(key, float("nan")) for r in runs if r["variant"] == variant and r["seed"] == seed
        ]
        vals = [v for v in vals if v == v]
        return float(np.mean(vals)) if vals else float("nan")

    chance_mean = {
        k: float(np.nanmean([f["chance"].get(k, np.nan) for f in info])) for k in RETRIEVAL + ("ap:change",)
    }
    pixel_change = float(np.nanmean([f["pixel"]["ap:change"] for f in info]))
    out = [
        f"Pool: {results['n_pairs']} real pairs, {sum(len(f['sources']) for f in info)} sources, {nf} folds; "
        f"seeds {seeds}. Every cell: mean over folds, ± std over seeds.",
        "",
        "| variant | seeds | T→P R@1 | T→P R@5 | T→P R@10 | P→T R@1 | P→T R@5 | P→T R@10 | mR "
        "| mean AP lift | change vs none AP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        cells = [_mean_sd([fold_mean(v, k, s) for s in seeds], 1) for k in RETRIEVAL]
        cells += [_mean_sd([fold_mean(v, k, s) for s in seeds], 2) for k in ("lift", "ap:change")]
        n_seeds = len({r["seed"] for r in runs if r["variant"] == v})
        out.append(f"| {v} | {n_seeds} | " + " | ".join(cells) + " |")
    out.append(
        "| random | – | "
        + " | ".join(f"{chance_mean[k]:.1f}" for k in RETRIEVAL)
        + f" | 0.00 | {chance_mean['ap:change']:.2f} |"
    )
    out.append(
        f"| pixel difference | – | – | – | – | – | – | – | – | "
        f"{np.nanmean([f['pixel']['lift'] for f in info]):.2f} | {pixel_change:.2f} |"
    )
    # per fold
    out += [
        "",
        "Per fold (gallery = all pairs of the fold's sources; mean ± std over seeds):",
        "",
        "| fold | sources | pairs | variant | mR | random mR | mean AP lift | change vs none AP "
        "| pixel change AP | random change AP |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, f in enumerate(info):
        for v in variants:
            rows = [r["row"] for r in runs if r["variant"] == v and r["fold"] == k]
            out.append(
                f"| {k} | {', '.join(f['sources'])} | {f['n']} | {v} | "
                f"{_mean_sd([r['mR'] for r in rows], 1)} | "
                f"{f['chance']['mR']:.1f} | {_mean_sd([r['lift'] for r in rows])} | "
                f"{_mean_sd([r['ap:change'] for r in rows])} | {f['pixel']['ap:change']:.2f} | "
                f"{f['chance']['ap:change']:.2f} |"
            )
    # per type
    out += [
        "",
        "Per change type (folds where the type has >= 4 pairs; AP mean over those folds, ± std over seeds):",
        "",
        "| type | folds | " + " | ".join(variants) + " | pixel difference | random (prevalence) |",
        "|---|---:|" + "---:|" * (len(variants) + 2),
    ]
    for t in TYPE_QUERIES:
        ks = [k for k, f in enumerate(info) if t in f["types"]]
        if not ks:
            continue
        cells = []
        for v in variants:
            per_seed = [
                np.mean(
                    [
                        r["row"][f"ap:{t}"]
                        for r in runs
                        if r["variant"] == v and r["seed"] == s and r["fold"] in ks
                    ]
                )
                for s in seeds
            ]
            cells.append(_mean_sd(per_seed))
        pix = np.mean([info[k]["pixel"][f"ap:{t}"] for k in ks])
        prev = np.mean([info[k]["chance"][f"ap:{t}"] for k in ks])
        out.append(f"| {t} | {len(ks)} | " + " | ".join(cells) + f" | {pix:.2f} | {prev:.2f} |")
    out.append(
        "| change vs none | "
        + str(sum(1 for f in info if f["pixel"]["ap:change"] == f["pixel"]["ap:change"]))
        + " | "
        + " | ".join(_mean_sd([fold_mean(v, "ap:change", s) for s in seeds]) for v in variants)
        + f" | {pixel_change:.2f} | {chance_mean['ap:change']:.2f} |"
    )
    # per source
    out += [
        "",
        "Per source (scored by its fold's model; own-gallery mR is inflated by small galleries, "
        "compare it with its own random mR):",
        "",
        "| source | pairs | variant | own mR | random mR | change vs none AP | pixel | random "
        "| buildings_built AP | pixel | random |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = sorted({s for r in runs for s in r["sources"]})
    for name in names:
        for v in variants:
            rs = [r["sources"][name] for r in runs if r["variant"] == v and name in r["sources"]]
            first = rs[0]
            bb = "ap:buildings_built"
            out.append(
                f"| {name} | {first['n']} | {v} | {_mean_sd([x['model']['mR'] for x in rs], 1)} | "
                f"{_num(first['chance']['mR'], 1)} | "
                f"{_mean_sd([x['model']['ap:change'] for x in rs])} | {_num(first['pixel']['ap:change'])} | "
                f"{_num(first['chance']['ap:change'])} | "
                + (
                    f"{_mean_sd([x['model'][bb] for x in rs])} | {first['pixel'][bb]:.2f} | "
                    f"{first['chance'][bb]:.2f} |"
                    if bb in first["model"]
                    else "– | – | – |"
                )
            )
    return "\n".join(out)


def write_lso(results: dict, args: argparse.Namespace) -> None:
    """Print the tables (and write them to --out-md with the run's date, commit, machine and load)."""
    import subprocess

    from textitsr.atomic import atomic_write_text

    text = lso_markdown(results)
    print(text)
    if args.out_md:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        stamp = (f"Date: {results['stamp']} · commit: `{commit or 'unknown'}` · machine: "
                 f"{platform.machine()}, {os.cpu_count()} CPU cores · load: {load} at the end.")
        head = f"# Real imagery, leave-source-out\n\n{stamp}\n\n"
        args.out_md.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out_md, head + text + "\n")
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out_json, json.dumps(results, indent=1))

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=SHARED_DATA_DIR / "realdev", help="labelled pairs folder")
    ap.add_argument("--checkpoint", type=Path, nargs="+", default=[], help="checkpoints (seeds) of one model")
    ap.add_argument("--label", default=None, help="row name (default: the model's fusion and backbone)")
    ap.add_argument(
        "--train-root", type=Path, default=None, help="train one model per seed on this source first"
    )
    ap.add_argument("--train-kind", default=None, help="source kind of --train-root (detected when omitted)")
    ap.add_argument(
        "--extra-train-root", type=Path, action="append", default=[],
        help="also train on this source's train split (repeatable; validation stays --train-root's)",
    )
    ap.add_argument(
        "--synthetic-root", type=Path, default=None,
        help="also score each model on this synthetic world's test split (e.g. data/bench-world)",
    )
    ap.add_argument("--fusion", default="gff:concat+absdiff")
    ap.add_argument("--image-encoder", default=None)
    ap.add_argument(
        "--model-option", action="append", default=[], help="ModelConfig field=value (repeatable)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-pairs", type=int, default=None, help="train on the first N pairs of each split")
    ap.add_argument(
        "--train-every", type=int, default=1,
        help="train on every K-th pair of the train split (validation keeps all its pairs)",
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--runs-dir", type=Path, default=DATA_DIR / "real-runs")
    ap.add_argument("--cache-dir", type=Path, default=DATA_DIR / "cache")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out-json", type=Path, default=None, help="write this row (+ baselines) as JSON")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None, help="no evaluation: merge rows")
    ap.add_argument(
        "--protocol", choices=("realdev", "leave-source-out"), default="realdev",
        help="realdev: score checkpoints on --root; leave-source-out: train per fold without its sources",
    )
    ap.add_argument("--pool", type=Path, action="append", default=[],
                    help="another pool folder in the realdev layout with `source` per pair (repeatable)")
    ap.add_argument("--folds", type=int, default=4, help="leave-source-out: number of folds")
    ap.add_argument("--variant", action="append", default=None,
                    help=f"leave-source-out recipe variant NAME[:{VARIANT_OPTIONS}] "
                         "(repeatable; default: base)")
    ap.add_argument("--shared", type=Path, default=SHARED_DATA_DIR, help="research data folder")
    ap.add_argument("--out-md", type=Path, default=None, help="leave-source-out: write the tables here")
    ap.add_argument(
        "--join-seeds", action="store_true",
        help="leave-source-out: also score each fold's seeds joined into one model (models.ensemble)",
    )
    ap.add_argument("--hub-weight", type=float, default=HUB_WEIGHT,
                    help="hubness correction of pair -> text ranking (0: plain cosines)")
    ap.add_argument("--archive-change-weight", type=float, default=ARCHIVE_CHANGE_WEIGHT,
                    help="read each pair's change relative to its archive's pixel changes "
                         "(embedding.archive_change; 0: each pair on its own)")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="leave-source-out: load fold checkpoints an earlier run left in --runs-dir")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.protocol == "leave-source-out":
        if args.from_json:
            merged = [json.loads(Path(f).read_text()) for f in args.from_json]
            results = {**merged[-1], "runs": [r for m in merged for r in m["runs"]]}
            write_lso(results, args)
            return
        args.variant = args.variant or ["base"]
        leave_source_out(args)
        return
    if args.from_json:
        stamp = machine_and_date()
        data = [json.loads(Path(f).read_text()) for f in args.from_json]
        rows = [r for d in data for r in d["rows"]]
        print(f"# realdev benchmark ({data[-1]['n_pairs']} real pairs); merged {len(data)} files, {stamp}\n")
        print(markdown(rows, data[-1]["chance"], data[-1]["pixel"], data[-1]["types"], data[-1]["counts"]))
        return
    from textitsr.models.checkpoint import load_checkpoint

    source = LabelledFolderSource(args.root)
    checkpoints = list(args.checkpoint)
    if args.train_root is not None:
        checkpoints += train_checkpoints(args)
    if not checkpoints:
        ap.error("give --checkpoint or --train-root")
    counts = type_counts([types and "+".join(types) for types in source.change_types.values()])
    types = [t for t in TYPE_QUERIES if counts.get(t, 0) >= MIN_PAIRS]
    runs, label, chance = [], args.label, None
    for ckpt in checkpoints:
        model = load_checkpoint(ckpt)
        runs.append(evaluate_model(model, source, args.cache_dir, types, args.hub_weight,
                                   args.archive_change_weight))
        if args.synthetic_root is not None:
            runs[-1].update(synthetic_row(model, args.synthetic_root, args.cache_dir, args.hub_weight,
                                          args.archive_change_weight))
        label = label or f"{model.config.fusion}, {model.config.image_encoder}"
        chance = chance or chance_rows(source, types, args.cache_dir, model)
    rows = [{"label": label, "checkpoints": [str(c) for c in checkpoints], "runs": runs}]
    pixel = pixel_baseline(source, types)
    stamp = machine_and_date()
    print(f"# realdev benchmark ({len(source)} real pairs, {args.root}); {stamp}\n")
    print(markdown(rows, chance, pixel, types, counts))
    if args.out_json:
        from textitsr.atomic import atomic_write_text

        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "rows": rows,
            "chance": chance,
            "pixel": pixel,
            "types": types,
            "counts": counts,
            "n_pairs": len(source),
            "stamp": stamp,
        }
        atomic_write_text(args.out_json, json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
