"""Turn similar/dissimilar labels into a better metric space: fine-tune the pair side of the model.

Only the pair projection head (optionally the fusion too) is trained, on cached frozen-backbone
features, so a round costs seconds and re-embedding an archive is one head pass. The loss is

    contrastive(labelled item pairs)  +  distill_weight * KL(base || new pair <-> text softmax)
                                      (+ text_weight * InfoNCE(captioned pairs), off by default)

The contrastive term pulls similar items together (1 - cos) and pushes dissimilar ones below a
cosine margin; the alignment term keeps the pair embeddings ranking the (unchanged) text
embeddings as the base model did, so text -> pair search does not degrade while pair -> pair
search learns the analyst's notion of "similar change". Plain InfoNCE on the training captions
was the first choice, but it keeps pulling each pair to its own captions and overfits (it lowered
test pair->pair mAP@20 from 53.6 to 50.7 on the synthetic benchmark; distillation: 58.1, with
text mR -0.4). The text head is frozen: caption embeddings in a store stay valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from textitsr.active.anneal import Label
from textitsr.errors import InputError
from textitsr.training.losses import MAX_LOGIT_SCALE, info_nce


class PairEmbedder(Protocol):
    """The trainable part of `TextITSR` this module needs (see CONTRACTS.md)."""

    logit_scale: torch.Tensor

    def embed_pair_features(self, feats: Any) -> torch.Tensor: ...
    def embed_text_features(self, text_feats: torch.Tensor) -> torch.Tensor: ...
    def named_parameters(self) -> Any: ...


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning schedule; defaults are what the CLI, app and benchmark use."""

    steps: int = 150
    lr: float = 3e-4
    weight_decay: float = 1e-4
    #: Dissimilar item pairs are pushed below this cosine similarity.
    margin: float = 0.5
    label_batch: int = 256
    caption_batch: int = 128
    #: Weight of more InfoNCE on the captioned pairs (0 disables it). Off by default: on the
    #: synthetic benchmark it overfits the training captions (test pair->pair mAP@20 53.6 -> 50.7).
    text_weight: float = 0.0
    #: Weight of the alignment distillation: KL between the base and the fine-tuned model's
    #: pair <-> text softmaxes over a caption batch; keeps text search intact (mR -0.4, not -5.7).
    distill_weight: float = 1.0
    #: Train the fusion module as well as the pair head.
    train_fusion: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.label_batch < 1 or self.caption_batch < 2:
            raise InputError(
                "finetune: steps, label_batch >= 1, caption_batch >= 2 and lr > 0 expected, got "
                f"steps={self.steps} lr={self.lr} label_batch={self.label_batch} "
                f"caption_batch={self.caption_batch}"
            )


@dataclass
class CaptionData:
    """Captioned pairs that anchor the text alignment: features, one text embedding per caption.

    `caption_pair[c]` is the row of `pair_feats` caption c describes; `caption_text_id[c]` groups
    identical sentences (their pairs are not negatives of each other) and may be None.
    """

    pair_feats: Any
    text_feats: torch.Tensor
    caption_pair: np.ndarray
    caption_text_id: np.ndarray | None = None


@dataclass
class FinetuneResult:
    steps: int
    losses: list[float]
    parameters: list[str]


def take_features(feats: Any, idx: np.ndarray | torch.Tensor) -> Any:
    """Rows `idx` of a PairFeatures-like dataclass (every tensor field is indexed, None kept)."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return dataclasses.replace(
        feats,
        **{
            f.name: getattr(feats, f.name)[idx]
            for f in dataclasses.fields(feats)
            if isinstance(getattr(feats, f.name), torch.Tensor)
        },
    )


def feature_count(feats: Any) -> int:
    for f in dataclasses.fields(feats):
        value = getattr(feats, f.name)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise InputError(f"{type(feats).__name__}: no tensor fields")


def pair_side_parameters(model: PairEmbedder, sample: Any, train_fusion: bool = False) -> list[str]:
    """Names of the parameters the pair path uses: the head, plus the fusion when asked.

    Found by one backward pass through `embed_pair_features` (so no naming convention is
    assumed); names containing "fusion" are left out unless `train_fusion`, "text" never trains, and
    a frozen parameter (a fitted probe of a `ProbedHead`) stays frozen.
    """
    params = dict(model.named_parameters())
    saved = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        with torch.enable_grad():
            model.embed_pair_features(sample).sum().backward()
        used = [n for n, p in params.items() if p.grad is not None]
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(saved[n])
    names = [n for n in used if saved[n] and "text" not in n and (train_fusion or "fusion" not in n)]
    if not names:
        raise InputError("finetune: the model's pair path has no trainable parameters")
    return names


def contrastive_loss(
    ea: torch.Tensor, eb: torch.Tensor, similar: torch.Tensor, margin: float
) -> torch.Tensor:
    """Class-balanced: mean(1 - cos) over similar pairs + mean(relu(cos - margin)) over dissimilar."""
    cos = (ea * eb).sum(dim=-1)
    terms = []
    if similar.any():
        terms.append((1.0 - cos[similar]).mean())
    if (~similar).any():
        terms.append(F.relu(cos[~similar] - margin).mean())
    return torch.stack(terms).sum()


def alignment_distillation(
    pair: torch.Tensor, base_pair: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """KL(base || new) of the pair -> text and text -> pair softmaxes over a batch.

    Unlike more InfoNCE on the training captions (which keeps pulling each pair to its own
    captions and overfits), this only asks the new embeddings to rank the texts as the base did.
    """
    scale = logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()
    new, old = scale * pair @ text.t(), scale * base_pair @ text.t()
    kl = 0.0
    for n, o in ((new, old), (new.t(), old.t())):
        kl = kl + F.kl_div(
            F.log_softmax(n, dim=1), F.log_softmax(o, dim=1), log_target=True, reduction="batchmean"
        )
    return 0.5 * kl


def finetune(
    model: PairEmbedder,
    items: Any,
    labels: Sequence[Label],
    captions: CaptionData | None = None,
    config: FinetuneConfig | None = None,
    progress: Callable[[float, str], None] | None = None,
    *,
    more_labels: Sequence[Label] = (),
    more_from: int | None = None,
    before_more: Callable[[], None] | None = None,
) -> FinetuneResult:
    """Fine-tune `model` in place on labelled item pairs (`labels` index rows of `items`).

    With `more_labels`, steps from `more_from` on train on `labels + more_labels`, and
    `before_more()` is called just before (the model then has seen `labels` only): one run both
    measures agreement with held-out answers and trains on all of them, instead of two runs.
    """
    config = config or FinetuneConfig()
    labels = [(int(a), int(b), bool(s)) for a, b, s in labels]
    more = [(int(a), int(b), bool(s)) for a, b, s in more_labels]
    if not labels:
        raise InputError("finetune: no similar/dissimilar labels yet; label some pairs first")
    if more and (more_from is None or not 0 <= more_from < config.steps):
        raise InputError(f"finetune: more_from={more_from!r}: expected a step in 0..{config.steps - 1}")
    n_items = feature_count(items)
    for a, b, _ in labels + more:
        if not (0 <= a < n_items and 0 <= b < n_items):
            raise InputError(f"finetune: labelled item ({a}, {b}) outside the {n_items} item features")
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    names = pair_side_parameters(model, take_features(items, np.arange(min(2, n_items))), config.train_fusion)
    params = dict(model.named_parameters())
    saved = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in names)
    trainable = [params[n] for n in names]
    opt = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)

    pairs = torch.tensor([(a, b) for a, b, _ in labels], dtype=torch.long)
    similar = torch.tensor([s for _, _, s in labels], dtype=torch.bool)
    text_emb = None
    if captions is not None and (config.text_weight > 0 or config.distill_weight > 0):
        with torch.no_grad():
            text_emb = model.embed_text_features(captions.text_feats).detach()
            base_pair = embed_items(model, captions.pair_feats) if config.distill_weight > 0 else None
        cap_pair = np.asarray(captions.caption_pair, dtype=np.int64)
        by_pair: dict[int, list[int]] = {}
        for c, p in enumerate(cap_pair):
            by_pair.setdefault(int(p), []).append(c)
        captioned = np.array(sorted(by_pair), dtype=np.int64)

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # no dropout/batch-norm drift: the head is small and data is few
    losses: list[float] = []
    try:
        for step in range(config.steps):
            if more and step == more_from:
                if before_more is not None:
                    before_more()
                pairs = torch.tensor([(a, b) for a, b, _ in labels + more], dtype=torch.long)
                similar = torch.tensor([s for _, _, s in labels + more], dtype=torch.bool)
            pick = torch.randperm(len(pairs), generator=gen)[: config.label_batch]
            uniq, inv = torch.unique(pairs[pick].reshape(-1), return_inverse=True)
            emb = model.embed_pair_features(take_features(items, uniq.numpy()))
            inv = inv.reshape(-1, 2)
            loss = contrastive_loss(emb[inv[:, 0]], emb[inv[:, 1]], similar[pick], config.margin)
            if text_emb is not None:
                rows = rng.choice(captioned, size=min(config.caption_batch, len(captioned)), replace=False)
                caps = np.array([rng.choice(by_pair[int(r)]) for r in rows])
                pe = model.embed_pair_features(take_features(captions.pair_feats, rows))
                fn = None
                if captions.caption_text_id is not None:
                    tid = torch.as_tensor(np.asarray(captions.caption_text_id)[caps])
                    fn = tid[:, None] == tid[None, :]
                scale = model.logit_scale.detach()
                if config.text_weight > 0:
                    loss = loss + config.text_weight * info_nce(pe, text_emb[caps], scale, fn)
                if base_pair is not None:
                    loss = loss + config.distill_weight * alignment_distillation(
                        pe, torch.from_numpy(base_pair[rows]), text_emb[caps], scale
                    )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(
                    (step + 1) / config.steps,
                    f"fine-tuning: step {step + 1}/{config.steps}, loss {losses[-1]:.3f}",
                )
    finally:
        for n, p in params.items():
            p.requires_grad_(saved[n])
        if was_training and hasattr(model, "train"):
            model.train()
    return FinetuneResult(config.steps, losses, names)


@torch.no_grad()
def embed_items(model: PairEmbedder, feats: Any, batch: int = 512) -> np.ndarray:
    """(N, d) float32 pair embeddings from cached backbone features (the cheap re-embedding)."""
    n = feature_count(feats)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        out = [
            model.embed_pair_features(take_features(feats, np.arange(i, min(i + batch, n))))
            .float()
            .cpu()
            .numpy()
            for i in range(0, n, batch)
        ]
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)


@dataclass
class FusedFeatures:
    """Fusion outputs (N, F): with the fusion frozen, the pair head is all that trains."""

    fused: torch.Tensor


class HeadView(torch.nn.Module):
    """`model`'s pair head as a PairEmbedder over `FusedFeatures` (shares the head's weights).

    With a frozen fusion (the default), fusing the cached backbone features once and training the
    head on those is exact and makes a TFF fine-tune as cheap as a GFF one.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.pair_head = model.pair_head
        object.__setattr__(self, "_model", model)  # not a submodule: nothing else is trained
        self.train(model.training)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._model.logit_scale

    def embed_pair_features(self, feats: FusedFeatures) -> torch.Tensor:
        return self.pair_head(feats.fused)

    def embed_text_features(self, text_feats: torch.Tensor) -> torch.Tensor:
        return self._model.embed_text_features(text_feats)


def has_head_view(model: Any) -> bool:
    return hasattr(model, "fusion") and hasattr(model, "pair_head")


@torch.no_grad()
def fuse_features(model: Any, feats: Any, batch: int = 256) -> FusedFeatures:
    """Run `model`'s (frozen) fusion over cached backbone features once."""
    was_training = model.training
    model.eval()
    try:
        n = feature_count(feats)
        parts = [
            model.fusion(
                take_features(feats, np.arange(i, min(i + batch, n))).to(model.device, torch.float32)
            )
            .float()
            .cpu()
            for i in range(0, n, batch)
        ]
    finally:
        model.train(was_training)
    return FusedFeatures(torch.cat(parts) if parts else torch.zeros(0, 0))


# ------------------------------------------------------------- stored-embedding fast path
@dataclass
class StoredEmbeddings:
    """An archive's pair embeddings as the store keeps them (N, d), L2-normalised."""

    emb: torch.Tensor


class EmbeddingAdapter(torch.nn.Module):
    """A learned linear map W (d x d, starting at the identity) on the stored pair embeddings.

    `normalize(W e)` for a stored `e = normalize(head(x))` equals `normalize(W head(x))`, so after
    training W folds exactly into the pair head's last linear layer (`fold_adapter`): a fine-tune
    needs neither images nor backbones, only the store's own embeddings, and re-embedding the
    archive is one matrix product. The text side is the store's caption embeddings, unchanged.
    """

    def __init__(self, dim: int, logit_scale: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(dim))
        self.register_buffer("logit_scale", logit_scale.detach().clone())

    def embed_pair_features(self, feats: StoredEmbeddings) -> torch.Tensor:
        return F.normalize(feats.emb @ self.weight.t(), dim=-1)

    def embed_text_features(self, text_feats: torch.Tensor) -> torch.Tensor:
        return text_feats  # already the stored caption embeddings


@torch.no_grad()
def fold_adapter(model: Any, adapter: EmbeddingAdapter) -> None:
    """Apply W to `model`'s pair head in place: a probed or joined head's final map becomes W·mix,
    a plain head's last linear layer becomes W·A, W·b."""
    mix = getattr(model.pair_head, "mix", None)
    if isinstance(mix, torch.Tensor):
        mix.copy_(adapter.weight.to(mix.dtype) @ mix)
        return
    last = [m for m in model.pair_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    w = adapter.weight.to(last.weight.dtype)
    last.weight.copy_(w @ last.weight)
    if last.bias is not None:
        last.bias.copy_(w @ last.bias)
