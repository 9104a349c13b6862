"""Contrastive training of the trainable part of TextITSR (fusion + heads) on cached backbone features.

One epoch = every captioned training pair once, with one of its captions drawn at random (see
`sampling.py`); symmetric InfoNCE with the model's learnable temperature (`losses.py`); AdamW with a
linear warm-up then cosine decay, per step; gradient-norm clipping; validation mR after each epoch
with early stopping. Validation uses the source's "val" split, or a seeded hold-out of the training
pairs when the source has none.

Resumability: after every epoch `out/last/` is rewritten atomically with `state.safetensors`
(trainable weights, the best weights so far, optimizer moments, torch RNG) and `state.json` (epoch,
step, scheduler, history, config) — no pickles. `resume=True` continues from it; batches are a pure
function of (seed, epoch), so a resumed run sees the same batches the uninterrupted one would.
The best model is written with `save_checkpoint(out, extra=summary)` whenever validation mR improves
(so an interrupted run still leaves a loadable best-so-far checkpoint, its summary marked
`finished: false`) and once more at the end with the final summary. `last/` lives inside the
checkpoint folder and is passed as `keep` to the save, which carries it into the new folder before
the swap: no moment exists at which a crash loses it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from textitsr.atomic import atomic_dir
from textitsr.data.pairs import PairSource
from textitsr.embedding.cache import DEFAULT_CACHE_DIR, EmptySplitError, FeatureCache, build_or_load
from textitsr.embedding.encode import resolve_device
from textitsr.errors import CheckpointError, InputError
from textitsr.evaluation.evaluate import evaluate_cache
from textitsr.evaluation.metrics import flatten_metrics
from textitsr.outputs import check_checkpoint_out
from textitsr.training.losses import info_nce
from textitsr.training.sampling import Batch, CaptionSampler

LAST_DIR = "last"
STATE_VERSION = 1


@dataclass
class TrainConfig:
    """Everything one training run depends on; the defaults run offline on a CPU."""

    root: Path
    out: Path
    #: More training sources (kinds detected): their train splits are added to root's; validation
    #: stays root's, so early stopping judges the data the model is meant for.
    extra_roots: list[Path] = field(default_factory=list)
    #: Source kind (levircc, dubaiccd, folder, geotiff, synthetic); None -> detected from root.
    source: str | None = None
    #: Keyword arguments of the source's loader (data.registry.SourceOptions.resolve gives them).
    source_options: dict[str, Any] = field(default_factory=dict)
    #: Fusion spec ("tff", "concat-transformer", "gff:before+after+diff", ...); None -> ModelConfig's.
    fusion: str | None = None
    #: Extra ModelConfig fields (embed_dim, fusion_width, ...); backbones default to the offline pair.
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    #: Stop after this many epochs without a better validation mR.
    patience: int = 6
    #: Share of training pairs held out for validation when the source has no "val" split.
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    cache_dir: Path = DEFAULT_CACHE_DIR
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.root, self.out, self.cache_dir = Path(self.root), Path(self.out), Path(self.cache_dir)
        self.extra_roots = [Path(p) for p in self.extra_roots]
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"train config: {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise InputError(f"train config: batch_size must be >= 2 (contrastive), got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"train config: lr must be > 0, got {self.lr}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"train config: val_fraction must be in (0, 1), got {self.val_fraction}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["extra_roots"] = [str(p) for p in self.extra_roots]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best_val: dict
    epochs_run: int
    train_seconds: float
    history: list[dict]

    @property
    def best_val_mR(self) -> float:  # noqa: N802 - the paper's name
        return float(self.best_val["mR"])


@dataclass
class TrainData:
    """Cached features for training plus the pairs used for training and for validation."""

    train: FeatureCache
    val: FeatureCache
    train_idx: np.ndarray
    val_idx: np.ndarray
    val_name: str  # "val" or "holdout"


def train(config: TrainConfig) -> TrainResult:
    """Train per `config`, write the best checkpoint to `config.out`, return the summary."""
    from textitsr.data.registry import open_source
    from textitsr.models.textitsr import ModelConfig, TextITSR

    check_checkpoint_out(config.out, inputs=[config.root, *config.extra_roots])
    device = resolve_device(config.device)
    seed_everything(config.seed)
    options = dict(config.model_options)
    if config.fusion is not None:
        options["fusion"] = config.fusion
    # On the training device before caching: the backbones embed the whole source there.
    model = TextITSR(ModelConfig(**options)).to(device)
    source = open_source(config.root, config.source, **config.source_options)
    kind = config.source or source.name
    extra = [open_source(root) for root in config.extra_roots]
    data = prepare_data(model, source, config, extra)
    dataset = {"kind": kind, "root": str(config.root.resolve())}
    if extra:
        roots = zip(extra, config.extra_roots, strict=True)
        dataset["extra"] = [{"kind": s.name, "root": str(r.resolve())} for s, r in roots]
    return fit(model, data, config, dataset=dataset)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(
    model: torch.nn.Module, source: PairSource, config: TrainConfig, extra: list[PairSource] | None = None
) -> TrainData:
    """Feature caches for training and validation: the "val" split, else a hold-out of "train".
    The train splits of `extra` sources join the training pairs (never the validation)."""

    def cache(split: str | None) -> FeatureCache:
        return build_or_load(model, source, split, config.cache_dir, progress=config.progress)

    if extra:
        data = prepare_data(model, source, config)
        more = [build_or_load(model, s, "train", config.cache_dir, progress=config.progress) for s in extra]
        train = FeatureCache.concat([data.train, *more])  # root's pairs first: hold-out indices stay valid
        train_idx = np.concatenate([data.train_idx, np.arange(data.train.n_pairs, train.n_pairs)])
        val = train if data.val is data.train else data.val
        return TrainData(train, val, train_idx, data.val_idx, data.val_name)

    try:
        train_cache, val_cache = cache("train"), None
        try:
            val_cache = cache("val")
        except EmptySplitError:
            pass
    except EmptySplitError:
        train_cache, val_cache = cache(None), None  # a source without splits: all of it trains
    all_idx = np.arange(train_cache.n_pairs)
    if val_cache is not None:
        return TrainData(train_cache, val_cache, all_idx, np.arange(val_cache.n_pairs), "val")
    rng = np.random.default_rng(config.seed)
    captioned = all_idx[np.diff(train_cache.caption_offsets) > 0]
    n_val = max(2, int(round(config.val_fraction * len(captioned))))
    if len(captioned) - n_val < 2:
        raise InputError(f"{config.root}: too few captioned pairs ({len(captioned)}) to train and validate")
    held = rng.permutation(captioned)[:n_val]
    rest = np.setdiff1d(all_idx, held)
    return TrainData(train_cache, train_cache, rest, np.sort(held), "holdout")


def fit(
    model: torch.nn.Module,
    data: TrainData,
    config: TrainConfig,
    dataset: dict | None = None,
    aux_loss: Callable[[torch.nn.Module, Batch, torch.Tensor], torch.Tensor] | None = None,
) -> TrainResult:
    """The training loop on cached features (used by `train` and by benchmarks with shared caches).
    `aux_loss(model, batch, pair_emb)`, when given, is added to the contrastive loss of every batch."""
    from textitsr.models.checkpoint import save_checkpoint

    console = Console(stderr=True, quiet=not config.progress)
    device = model.device
    sampler = CaptionSampler(
        data.train.caption_offsets,
        data.train.caption_text,
        data.train.changed,
        batch_size=min(config.batch_size, max(2, len(data.train_idx))),
        seed=config.seed,
        pairs=data.train_idx,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, norms, the logit scale
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        fused=True,  # one kernel for all parameters: ~10x faster steps than the default loop on CPU
    )
    steps_per_epoch = len(sampler)
    total_steps = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(warmup, total_steps))

    state = {
        "epoch": 0,
        "step": 0,
        "best_mR": -1.0,
        "best_epoch": 0,
        "best_val": {},
        "bad_epochs": 0,
        "history": [],
        "train_seconds": 0.0,
    }
    best_weights = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
    last = config.out / LAST_DIR
    if config.resume and (last / "state.json").is_file():
        state, best_weights = _load_last(last, model, optimizer, scheduler, config)
        console.print(f"resuming from {last} after epoch {state['epoch']}")

    def save_best(finished: bool) -> None:
        """The model's current weights as the checkpoint; `last/` is carried over, never dropped."""
        summary = _summary(state, config, data, dataset, finished)
        save_checkpoint(model, config.out, extra=summary, keep=[LAST_DIR])

    bar_kw = {"disable": not config.progress, "leave": False, "unit": "batch"}
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"] + 1
        t0, cpu0 = time.perf_counter(), time.process_time()
        model.train()
        losses = []
        for batch in tqdm(sampler.epoch(epoch), total=steps_per_epoch, desc=f"epoch {epoch}", **bar_kw):
            feats = data.train.pair_features(batch.pair_idx, device, tokens=model.uses_tokens)
            pair_emb = model.embed_pair_features(feats)
            text_emb = model.embed_text_features(data.train.text_features(batch.text_idx, device))
            loss = info_nce(
                pair_emb, text_emb, model.logit_scale, torch.from_numpy(batch.false_negatives).to(device)
            )
            if aux_loss is not None:
                loss = loss + aux_loss(model, batch, pair_emb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            losses.append(float(loss.detach()))
        epoch_seconds, epoch_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        val = evaluate_cache(model, data.val, data.val_idx)
        state["train_seconds"] += time.perf_counter() - t0
        improved = val["mR"] > state["best_mR"]
        if improved:
            state.update(best_mR=val["mR"], best_epoch=epoch, best_val=val, bad_epochs=0)
            best_weights = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        row = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "seconds": round(epoch_seconds, 2),
            "cpu_seconds": round(epoch_cpu, 2),
            "lr": scheduler.get_last_lr()[0],
            "temperature": float(1.0 / model.scale().detach()),
            **{f"val_{k}": round(v, 2) for k, v in flatten_metrics(val).items()},
        }
        state["history"].append(row)
        console.print(
            f"epoch {epoch}/{config.epochs}  loss {row['loss']:.4f}  val mR {val['mR']:.2f} "
            f"(t2p R@1 {val['text_to_pair']['r1']:.1f}, p2t R@1 {val['pair_to_text']['r1']:.1f})"
            f"{'  *best*' if improved else ''}  {epoch_seconds:.1f}s"
        )
        if improved:  # the model holds the best weights right now: make them loadable at once
            save_best(finished=False)
        _save_last(last, model, optimizer, scheduler, state, best_weights, config)

    model.load_state_dict(best_weights, strict=False)
    save_best(finished=True)
    model.eval()
    console.print(f"best val mR {state['best_mR']:.2f} at epoch {state['best_epoch']} -> {config.out}")
    return TrainResult(
        config.out,
        state["best_epoch"],
        state["best_val"],
        state["epoch"],
        state["train_seconds"],
        state["history"],
    )


def _summary(state: dict, config: TrainConfig, data: TrainData, dataset: dict | None, finished: bool) -> dict:
    """The training summary stored in the checkpoint's `extra` (the model card shows it)."""
    stopped_early = state["bad_epochs"] >= config.patience and state["epoch"] < config.epochs
    return {
        "training": {
            "epochs": state["epoch"],
            "finished": finished,
            "best_epoch": state["best_epoch"],
            "best_val_mR": round(state["best_mR"], 3),
            "best_val": {k: round(v, 3) for k, v in flatten_metrics(state["best_val"]).items()},
            "validation": data.val_name,
            "stopped_early": stopped_early,
            "train_seconds": round(state["train_seconds"], 2),
            "dataset": dataset or {},
            "n_train_pairs": int(len(data.train_idx)),
            "config": {k: v for k, v in config.to_json().items() if k not in ("progress", "resume")},
        }
    }


def _warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _save_last(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict,
    best_weights: dict[str, torch.Tensor],
    config: TrainConfig,
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_weights.items()})
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict] = {}
    for pid, pstate in opt["state"].items():
        for key, val in pstate.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                opt_scalars.setdefault(str(pid), {})[key] = val
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "version": STATE_VERSION,
        "state": state,
        "config": config.to_json(),
        "model_config": model.config.to_dict(),
        "optimizer_param_groups": opt["param_groups"],
        "optimizer_scalars": opt_scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if _jsonable(v)},
    }
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=_json_default))


def _load_last(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{folder}: unreadable training state ({err}); delete it to start over"
        ) from err
    if meta.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{folder}/state.json: version {meta.get('version')!r}, expected {STATE_VERSION}"
        )
    if meta["model_config"] != model.config.to_dict():
        raise CheckpointError(
            f"{folder}: saved with model config {meta['model_config']}, but this run asks for "
            f"{model.config.to_dict()}; use the same --fusion/options or another --out"
        )
    device = model.device
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    expected = set(model.trainable_state_dict())
    if set(weights) != expected or unexpected:
        raise CheckpointError(f"{folder}: saved weights do not match the model (unexpected {unexpected[:5]})")
    best = {k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v.to(device) if key != "step" else v
    for pid, scalars in meta["optimizer_scalars"].items():
        opt_state.setdefault(int(pid), {}).update(scalars)
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer_param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    torch.set_rng_state(tensors["rng.torch"])  # dropout; batches depend on (seed, epoch) only
    return meta["state"], best


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, default=_json_default)
        return True
    except TypeError:
        return False


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def load_training_state(out: Path) -> dict:
    """The saved `state.json` of a run (epoch, history, config), for reports and tests."""
    path = Path(out) / LAST_DIR / "state.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state (train with --out {out} first)")
    return json.loads(path.read_text())
