"""Training data that mixes generated pairs with real labelled pairs, and a change-type loss.

Why: real labels carry further to unseen sources than fabricated pairs. A real labelled pair (pool
folder, see `evaluation.leave_source_out`) joins training with its own captions, repeated
`real_weight` times per epoch so ~100 real pairs are not drowned by thousands of generated ones.
Its change types (and the generated pairs' types) also feed `TypePrototypeLoss`: every change type
has a few plain sentences; the text head embeds them into one prototype per type, and each pair is
pulled towards the prototypes of its types (soft cross-entropy over all prototypes). The sentences
are written apart from the benchmark's queries, so the benchmark does not grade its own training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textitsr.data.pairs import id_part
from textitsr.embedding.cache import FeatureCache
from textitsr.errors import InputError
from textitsr.evaluation.leave_source_out import generated_source
from textitsr.models.probes import known_types
from textitsr.training.losses import MAX_LOGIT_SCALE
from textitsr.training.sampling import Batch
from textitsr.training.train import TrainData

#: Training sentences per change type (not the benchmark's TYPE_QUERIES).
TYPE_SENTENCES: dict[str, tuple[str, ...]] = {
    "buildings_built": (
        "new buildings have been constructed",
        "houses are built where there was open land",
        "the built-up area grows with new houses",
    ),
    "buildings_demolished": (
        "buildings have been torn down",
        "the houses are gone and only rubble or bare ground remains",
        "structures were wrecked and removed",
    ),
    "vegetation_cleared": (
        "trees have been felled",
        "the woodland is cut and the ground is bare",
        "green vegetation has been stripped away",
    ),
    "vegetation_grown": (
        "vegetation grows back over the area",
        "the bare ground becomes green",
    ),
    "water_expanded": (
        "the water spreads over the land",
        "the river overflows its banks",
        "flood water covers the fields",
    ),
    "water_receded": (
        "the water level drops and the shore is exposed",
        "the pond shrinks",
    ),
    "road_built": (
        "a road has been paved",
        "a new street is laid across the land",
        "a new track cuts through the area",
    ),
    "none": (
        "nothing has changed",
        "both images show the same scene",
        "the area is unchanged",
    ),
}
def generated_labels(root: Path, cache: FeatureCache) -> tuple[list[str | None], list[str | None]]:
    """(change type, pool source) of every pair of a generated data cache, read from the data's
    LEVIR-CC caption file (`change_type`, `origin` per image); None where it has none."""
    doc = json.loads((Path(root) / "LevirCCcaptions.json").read_text(encoding="utf-8"))
    by_id = {
        f"levircc_{id_part(Path(r['filename']).stem)}": (r.get("change_type"), r.get("origin"))
        for r in doc.get("images", [])
    }
    types, sources = [], []
    for pid in cache.pair_ids:
        change_type, origin = by_id.get(pid, (None, None))
        types.append(change_type)
        sources.append(generated_source(origin) if origin else None)
    return types, sources


def load_pool(model: torch.nn.Module, folders: list[Path], cache_dir: Path) -> tuple[FeatureCache, list[str]]:
    """(one cache of every pool folder's pairs, the source of each pair), in folder then file order."""
    from textitsr.embedding.cache import build_or_load
    from textitsr.errors import InputError
    from textitsr.evaluation.leave_source_out import read_sources
    from textitsr.evaluation.realdev import LabelledFolderSource

    caches, sources = [], []
    for folder in folders:
        source = LabelledFolderSource(folder)
        cache = build_or_load(model, source, None, cache_dir, tokens=True, progress=False)
        by_id = {f"{source.name}_{id_part(stem)}": s for stem, s in read_sources(folder).items()}
        missing = [p for p in cache.pair_ids if p not in by_id]
        if missing:
            raise InputError(f"{folder}/pairs.jsonl: no source for pairs {missing[:3]}")
        sources += [by_id[p] for p in cache.pair_ids]
        caches.append(cache)
    return FeatureCache.concat(caches), sources


def load_views(
    model: torch.nn.Module, folders: list[Path], cache_dir: Path, kinds: tuple[str, ...], seed: int = 0,
    paraphrased: bool = False,
) -> list[tuple[FeatureCache, list[str]]]:
    """(cache, source per pair) of each kind of augmented view (`synth.views`) of the pool folders,
    written into the data cache as needed; pairs in the order `load_pool` gives."""
    from textitsr.synth.views import view_folders

    made = view_folders(folders, cache_dir, kinds, seed, paraphrased)
    return [load_pool(model, fs, cache_dir) for fs in made.values()]


def load_generated(
    model: torch.nn.Module, data_dir: Path, extra_roots: list[Path], cache_dir: Path
) -> tuple[FeatureCache, list[str | None], FeatureCache, list[str | None]]:
    """(train cache, source per pair, val cache, source per pair) of generated data already made
    (`default_model.generated_data`): the main root's train split plus every extra root's, the main
    val split; change types from the caption files where the data record them."""
    from textitsr.data.registry import open_source
    from textitsr.embedding.cache import build_or_load

    parts: dict[str, list[FeatureCache]] = {"train": [], "val": []}
    sources: dict[str, list[str | None]] = {"train": [], "val": []}
    roots = [
        (Path(data_dir), "levircc", ("train", "val")),
        *[(Path(r), None, ("train",)) for r in extra_roots],
    ]
    for root, kind, splits in roots:
        source = open_source(root, kind)
        for split in splits:
            cache = build_or_load(model, source, split, cache_dir, tokens=False, progress=False)
            if (root / "LevirCCcaptions.json").is_file():
                types, origin = generated_labels(root, cache)
                cache.change_type = [t or c for t, c in zip(types, cache.change_type, strict=True)]
            else:
                origin = [None] * cache.n_pairs
            parts[split].append(cache)
            sources[split] += origin
    return FeatureCache.concat(parts["train"]), sources["train"], parts["val"][0], sources["val"]


@dataclass
class MixedData:
    """Generated train/val caches with their pairs' sources, and the real pool's cache."""

    train: FeatureCache
    train_sources: list[str | None]
    val: FeatureCache
    val_sources: list[str | None]
    pool: FeatureCache
    pool_sources: list[str]
    #: Augmented views of the pool (`synth.views`), pairs in the pool's order: they stand in for
    #: the repeats of each real pair, so a pair seen 3 times an epoch is seen as itself and 2 views.
    views: tuple[FeatureCache, ...] = ()

    def __post_init__(self) -> None:
        for view in self.views:  # a pool folder that changed between reading it and its views
            if view.n_pairs != self.pool.n_pairs:
                raise InputError(
                    f"real pool: {self.pool.n_pairs} pairs but a view of it has {view.n_pairs}; "
                    "was a pool folder changed while training started?"
                )

    def fold(
        self, held_out: set[str] | frozenset[str], real_weight: int
    ) -> tuple[TrainData, list[str | None]]:
        """Training data without the `held_out` sources: generated pairs not made from them, plus
        every other real pool pair `real_weight` times (0: none), its repeats taken from the views
        while there are any. Also returns the change type of every pair of the training cache (for
        the type loss)."""
        copies = [self.pool, *self.views[: max(0, int(real_weight) - 1)]]
        cache = FeatureCache.concat([self.train, *copies])
        gen = [i for i, s in enumerate(self.train_sources) if s not in held_out]
        real = [i for i, s in enumerate(self.pool_sources) if s not in held_out]
        offsets = [self.train.n_pairs + k * self.pool.n_pairs for k in range(len(copies))]
        repeats = [offsets[min(k, len(offsets) - 1)] for k in range(int(real_weight))]
        idx = np.array(gen + [o + i for o in repeats for i in real], dtype=np.int64)
        val_idx = np.array([i for i, s in enumerate(self.val_sources) if s not in held_out], dtype=np.int64)
        return TrainData(cache, self.val, idx, val_idx, "val"), list(cache.change_type)


class TypePrototypeLoss:
    """Soft cross-entropy of each labelled pair against the type prototypes (text head of the
    TYPE_SENTENCES, averaged); pairs without a known type are left out. Call per batch."""

    def __init__(self, model: torch.nn.Module, labels: list[str | None], weight: float) -> None:
        self.types = list(TYPE_SENTENCES)
        sentences = [s for t in self.types for s in TYPE_SENTENCES[t]]
        self.owner = torch.tensor([i for i, t in enumerate(self.types) for _ in TYPE_SENTENCES[t]])
        self.features = model.backbone_text_features(sentences)
        targets = np.zeros((len(labels), len(self.types)), dtype=np.float32)
        for i, label in enumerate(labels):
            for t in known_types(label):
                targets[i, self.types.index(t)] = 1.0
        self.targets = torch.from_numpy(targets)
        self.weight = float(weight)

    def prototypes(self, model: torch.nn.Module) -> torch.Tensor:
        emb = model.embed_text_features(self.features)
        sums = torch.zeros(len(self.types), emb.shape[1], device=emb.device).index_add_(
            0, self.owner.to(emb.device), emb
        )
        return F.normalize(sums, dim=-1)

    def __call__(self, model: torch.nn.Module, batch: Batch, pair_emb: torch.Tensor) -> torch.Tensor:
        target = self.targets[torch.from_numpy(batch.pair_idx)].to(pair_emb.device)
        keep = target.sum(1) > 0
        if not bool(keep.any()):
            return pair_emb.sum() * 0.0
        scale = model.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()
        logits = scale * pair_emb[keep] @ self.prototypes(model).t()
        soft = target[keep] / target[keep].sum(1, keepdim=True)
        return self.weight * -(soft * F.log_softmax(logits, dim=-1)).sum(1).mean()
