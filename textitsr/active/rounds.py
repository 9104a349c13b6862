"""ANNEAL rounds on an archive store: propose a batch, record answers, fine-tune, re-embed, measure.

A workspace folder holds everything a session produces, so a session resumes where it stopped:

    annotations.jsonl         the log (batches, labels, updates with their metrics)
    checkpoints/round-NNN/    the fine-tuned model after round NNN
    store/                    the base store re-embedded with the latest fine-tuned model

The base store and checkpoint are never modified. Every update fine-tunes the *base* checkpoint on
all labels so far (no drift from round to round); the next batch is selected in the newest space.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textitsr.active.anneal import Label, SelectionConfig, select_batch
from textitsr.active.annotations import AnnotationLog, pair_key
from textitsr.active.finetune import FinetuneConfig
from textitsr.errors import InputError, StoreError
from textitsr.evaluation.metrics import MAP_K, pair_map_at_k
from textitsr.outputs import check_workspace_out

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class AnnealPaths:
    """Layout of an annotation workspace (see module doc)."""

    root: Path

    @property
    def log(self) -> Path:
        return self.root / "annotations.jsonl"

    @property
    def store(self) -> Path:
        return self.root / "store"

    def checkpoint(self, round: int) -> Path:
        return self.root / "checkpoints" / f"round-{round:03d}"



class _FoldedModel:
    """A model as `save_checkpoint` sees it, with another pair head: the cached base model is shared
    with the app's searches (and holds ONNX sessions that cannot be copied), so it is left alone."""

    def __init__(self, model: Any, pair_head: Any) -> None:
        self.base, self.pair_head, self.config = model, pair_head, model.config

    def dims(self) -> dict:
        return self.base.dims()

    def trainable_state_dict(self) -> dict:
        state = dict(self.base.trainable_state_dict())
        head = {f"pair_head.{k}": v for k, v in self.pair_head.state_dict().items()}
        missing = set(head) - set(state)
        if missing:
            raise StoreError(f"fine-tuned pair head: weights {sorted(missing)[:3]} not in the base model")
        return state | head


@dataclass
class StoreCaptions:
    """A store's captions as fine-tuning and the metrics need them (store order)."""

    caption_pair: np.ndarray  # (C,) item row of each caption
    caption_text: np.ndarray  # (C,) index into texts
    texts: list[str]
    embeddings: np.ndarray  # (U, d) stored embedding of each distinct text


def store_captions(store: Any, row_of: dict[str, int]) -> StoreCaptions:
    """The store's captions of its own items, distinct texts with their stored embeddings."""
    caps = store.captions()
    emb = np.asarray(store.caption_embeddings(), np.float32)
    keep = caps["pair_id"].astype(str).isin(row_of).to_numpy()
    texts, first, caption_text = np.unique(caps["text"].astype(str).to_numpy()[keep], return_index=True,
                                           return_inverse=True)
    caption_pair = np.array([row_of[p] for p in caps["pair_id"].astype(str).to_numpy()[keep]], dtype=np.int64)
    return StoreCaptions(caption_pair, caption_text.astype(np.int64), [str(t) for t in texts],
                         emb[keep][first] if len(texts) else np.zeros((0, emb.shape[1]), np.float32))


#: Fewest labels with which part of them is held out to measure agreement on unseen answers.
MIN_HELDOUT_LABELS = 8
HELDOUT_FRACTION = 0.25
#: Share of the fine-tuning steps trained without the held-out labels (they join for the rest).
HELDOUT_STEPS = 0.75


def split_heldout(labels: list[Label], seed: int = 0) -> tuple[list[Label], list[Label]]:
    """(train, held-out) labels; held-out is empty when there are too few labels to spare some.

    About a quarter is held out (at least 2), and the training part must keep both answers
    (similar and dissimilar) so a distance threshold can be set on it.
    """
    if len(labels) < MIN_HELDOUT_LABELS:
        return labels, []
    order = np.random.default_rng(seed).permutation(len(labels))
    n_held = max(2, int(round(HELDOUT_FRACTION * len(labels))))
    held = [labels[i] for i in order[:n_held]]
    train = [labels[i] for i in order[n_held:]]
    kinds = {s for *_, s in train}
    return (train, held) if kinds == {True, False} else (labels, [])


def heldout_agreement(emb: np.ndarray, train: list[Label], held: list[Label]) -> float:
    """% of held-out labels on the right side of the distance threshold fitted on `train`."""
    from textitsr.active.anneal import best_threshold, pair_distances

    fit = best_threshold(pair_distances(emb, np.array([(a, b) for a, b, _ in train])),
                         np.array([s for *_, s in train], bool))
    d = pair_distances(emb, np.array([(a, b) for a, b, _ in held]))
    return float(100.0 * np.mean((d < fit) == np.array([s for *_, s in held], bool)))


def space_metrics(
    emb: np.ndarray,
    change_types: list[str | None],
    captions: StoreCaptions,
    labels: list[Label],
) -> dict[str, float]:
    """What the Annotate page plots over rounds (only what this store allows).

    pair_map20: pair -> pair mAP@20 by change type (stores with ground truth, e.g. synthetic);
    text_mR: text <-> pair mean recall over the store's captions (text search must not degrade).
    Agreement with the analyst is measured on held-out labels by `update_model`.
    """
    from textitsr.evaluation.metrics import retrieval_metrics

    out: dict[str, float] = {"n_labels": float(len(labels))}
    known = [t for t in change_types if t]
    if len(known) == len(change_types) and len(set(known)) < len(known):
        out["pair_map20"] = pair_map_at_k(emb, change_types, MAP_K)
    if len(captions.caption_pair):
        sim = captions.embeddings[captions.caption_text] @ emb.T
        out["text_mR"] = float(
            retrieval_metrics(sim, captions.caption_pair, caption_text=captions.caption_text)["mR"]
        )
    return out


class AnnealSession:
    """One analyst's ANNEAL rounds over a store (see module doc). Cheap to construct."""

    def __init__(
        self,
        store: Path,
        workdir: Path,
        checkpoint: Path | None = None,
        selection: SelectionConfig | None = None,
        finetune: FinetuneConfig | None = None,
        device: str = "cpu",
    ) -> None:
        from textitsr.index.store import Store

        self.base = Store.open(Path(store))
        if len(self.base) < 2:
            raise StoreError(f"{store}: ANNEAL needs a store with at least 2 pairs, found {len(self.base)}")
        ckpt = checkpoint or self.base.manifest.get("checkpoint")
        if not ckpt:
            raise InputError(f"{store}: manifest names no checkpoint; pass --checkpoint")
        self.checkpoint = Path(ckpt)
        check_workspace_out(workdir, store, what="ANNEAL workspace")
        self.paths = AnnealPaths(Path(workdir))
        self.log = AnnotationLog(self.paths.log)
        self.selection = selection or SelectionConfig()
        self.finetune_config = finetune or FinetuneConfig()
        self.device = device
        meta = self.base.metadata()
        self.ids: list[str] = meta["pair_id"].astype(str).tolist()
        self.row = {pid: i for i, pid in enumerate(self.ids)}
        self.change_types: list[str | None] = [
            None if (t is None or (isinstance(t, float) and np.isnan(t))) else str(t)
            for t in meta["change_type"]
        ]

    def current_store(self) -> Any:
        """The latest re-embedded store when there is one for these items, else the base store."""
        from textitsr.index.store import Store, is_store

        if is_store(self.paths.store):
            store = Store.open(self.paths.store)
            if len(store) == len(self.base):
                return store
        return self.base

    def embeddings(self) -> np.ndarray:
        return np.asarray(self.current_store().pair_embeddings(), dtype=np.float32)

    def labels(self) -> list[Label]:
        """Similar/dissimilar answers as (row a, row b, similar) over this store's items."""
        out = []
        for ann in self.log.labelled():
            if ann.a in self.row and ann.b in self.row:
                out.append((self.row[ann.a], self.row[ann.b], ann.similar))
        return out

    def pending(self) -> list[tuple[str, str]]:
        """The current round's item pairs still waiting for an answer, in the order asked."""
        return self.log.pending()

    def progress(self) -> dict[str, int]:
        """Round number, answered / size of the current batch, labels in total."""
        batch = self.log.batch()
        return {
            "round": self.log.current_round(),
            "batch": len(batch),
            "answered": len(batch) - len(self.log.pending()),
            "labels": len(self.labels()),
        }

    def next_batch(self, askable: Collection[str] | None = None) -> list[tuple[str, str]]:
        """The unanswered pairs of the current round, or a freshly selected batch (new round).

        `askable`: the item ids a new batch may contain (a simulated analyst knows only the items
        with a ground-truth change type); None allows every item of the store.
        """
        pending = self.log.pending()
        if pending:
            return pending
        items = None
        if askable is not None:
            items = np.array(sorted(self.row[i] for i in askable if i in self.row), dtype=np.int64)
        labels = self.labels()
        skipped = [
            (self.row[a], self.row[b]) for a, b in self.log.skipped() if a in self.row and b in self.row
        ]
        sel = select_batch(
            self.embeddings(), labels, self.selection, seed=self.log.current_round(), skipped=skipped,
            items=items,
        )
        pairs = [(self.ids[a], self.ids[b]) for a, b in sel.pairs]
        self.log.propose(pairs, strategy=self.selection.strategy)
        return pairs

    def answer(self, a: str, b: str, label: str, who: str = "analyst") -> None:
        for pid in (a, b):
            if pid not in self.row:
                raise InputError(f"pair id {pid!r}: not in store {self.base.root}")
        self.log.label(a, b, label, who=who)

    def update_model(self, progress: Progress | None = None) -> dict[str, float]:
        """Fine-tune on all labels, save the checkpoint, re-embed the store, log the metrics.

        Training runs on the store's own pair and caption embeddings (`EmbeddingAdapter`, folded
        into the pair head afterwards), so no image is read and no backbone runs. With enough
        labels a quarter is held out for the first `HELDOUT_STEPS` of the steps: agreement with
        them is measured at that point (`heldout_agreement`), then the same run goes on with them
        added. One training run, so the check costs no extra time. Steps are named through
        `progress`: loading, training, held-out check, saving, re-embedding, metrics.
        """
        import copy

        import torch

        from textitsr.active.finetune import (
            CaptionData,
            EmbeddingAdapter,
            StoredEmbeddings,
            embed_items,
            finetune,
            fold_adapter,
        )
        from textitsr.embedding.encode import load_model, torch_threads
        from textitsr.index.archive import Archive
        from textitsr.models.checkpoint import checkpoint_id, model_card, save_checkpoint

        labels = self.labels()
        if not labels:
            raise InputError("update: no similar/dissimilar answers yet; label some pairs first")
        say = progress or (lambda f, m: None)
        say(0.0, "loading the model and the archive's embeddings")
        # The process's cached model (the app already holds it): only its pair head is copied and
        # changed, so searches running meanwhile keep the base model.
        model = load_model(self.checkpoint, self.device)
        base_id = checkpoint_id(self.checkpoint)
        items = StoredEmbeddings(torch.from_numpy(np.asarray(self.base.pair_embeddings(), np.float32)))
        caps = store_captions(self.base, self.row)
        captions = None
        if len(caps.caption_pair):
            captions = CaptionData(items, torch.from_numpy(caps.embeddings[caps.caption_text]),
                                   caps.caption_pair, caps.caption_text)
        adapter = EmbeddingAdapter(int(items.emb.shape[1]), model.logit_scale)
        train_part, held = split_heldout(labels, seed=self.log.current_round())
        checked: list[float] = []

        def check() -> None:
            say(0.05 + 0.7 * HELDOUT_STEPS, f"held-out check: {len(held)} answers the model has not seen")
            checked.append(heldout_agreement(embed_items(adapter, items), train_part, held))

        steps = self.finetune_config.steps
        what = (f"training on {len(train_part)} answers, then all {len(labels)}" if held
                else f"training on {len(labels)} answers")
        with torch_threads(1):  # a 256 x 256 map: more threads only wait on each other
            finetune(adapter, items, train_part, captions, self.finetune_config,
                     lambda f, m: say(0.05 + 0.7 * f, f"{what}: {m}"),
                     more_labels=held, more_from=int(round(HELDOUT_STEPS * steps)) if held else None,
                     before_more=check if held else None)
        say(0.76, "saving the fine-tuned model")
        folded = _FoldedModel(model, copy.deepcopy(model.pair_head))
        fold_adapter(folded, adapter)
        round_ = self.log.current_round()
        folder = self.paths.checkpoint(round_)
        save_checkpoint(
            folded,  # type: ignore[arg-type]  # what a checkpoint stores of a TextITSR
            folder,
            extra={
                "anneal": {
                    "base_checkpoint": str(self.checkpoint),
                    "base_checkpoint_id": base_id,
                    "round": round_,
                    "n_labels": len(labels),
                    "strategy": self.selection.strategy,
                    "finetune": asdict(self.finetune_config),
                    "trained_on": "stored pair embeddings (linear map folded into the pair head)",
                }
            },
        )
        say(0.8, "re-embedding the archive and writing its copy")
        emb = embed_items(adapter, items)
        Archive(self.base.root).reembed(
            self.paths.store, emb, checkpoint=folder.resolve(), model=model_card(folder.resolve())
        )
        say(0.92, "measuring the new space")
        metrics = space_metrics(emb, self.change_types, caps, labels)
        metrics["n_heldout"] = float(len(held))
        if checked:
            metrics["heldout_agreement"] = checked[0]
        self.log.record_update(str(folder), len(labels), metrics)
        say(1.0, "done")
        return metrics

    def baseline_metrics(self) -> dict[str, float]:
        """The same metrics for the base store (round 0), from its stored embeddings."""
        from textitsr.evaluation.metrics import retrieval_metrics

        emb = np.asarray(self.base.pair_embeddings(), np.float32)
        out: dict[str, float] = {"n_labels": 0.0}
        known = [t for t in self.change_types if t]
        if len(known) == len(self.change_types) and len(set(known)) < len(known):
            out["pair_map20"] = pair_map_at_k(emb, self.change_types, MAP_K)
        caps = self.base.captions()
        if len(caps):
            rows = caps["pair_id"].astype(str).map(self.row)
            ok = rows.notna().to_numpy()
            sim = np.asarray(self.base.caption_embeddings(), np.float32)[ok] @ emb.T
            out["text_mR"] = float(
                retrieval_metrics(
                    sim, rows[ok].astype(int).to_numpy(), caption_text=caps["text"].astype(str).to_numpy()[ok]
                )["mR"]
            )
        return out

    def history(self) -> list[dict[str, Any]]:
        """Round 0 (base) then one row per update: round, n_labels and the metrics."""
        rows = [{"round": 0, **self.baseline_metrics()}]
        for rec in self.log.updates():
            rows.append({"round": int(rec["round"]), **rec["metrics"], "n_labels": float(rec["n_labels"])})
        return rows

    def is_labelled(self, a: str, b: str) -> bool:
        return pair_key(a, b) in self.log.latest()


def simulated_rounds(
    session: AnnealSession,
    oracle: Callable[[str, str], bool],
    rounds: int,
    budget: int | None = None,
    update: bool = True,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run `rounds` rounds with a simulated analyst (stops early at `budget` labels in total).

    Resumes a half-answered round from the log first. An oracle with a `knows(item_id)` method
    (the simulated analyst, which knows only items with a ground-truth change type) is asked only
    about items it knows; a resumed pair it does not know is skipped. Returns one row per round:
    round, batch size, similar answers, labels in total, and the metrics after the update.
    """
    knows = getattr(oracle, "knows", None)
    who = getattr(oracle, "name", "oracle")
    askable = None if knows is None else [i for i in session.ids if knows(i)]
    if askable is not None and len(askable) < 2:
        raise InputError(
            f"{who} oracle: {len(askable)} of the store's {len(session.ids)} pairs have a ground-truth "
            "change type; it needs at least two (a synthetic world's pairs)"
        )
    rows = []
    for _ in range(rounds):
        have = len(session.labels())
        if budget is not None and have >= budget:
            break
        batch = session.next_batch(askable)
        if knows is not None:
            batch = [(a, b) for a, b in batch if knows(a) and knows(b)]
        if budget is not None:
            batch = batch[: budget - have]
        similar = 0
        for a, b in batch:
            same = oracle(a, b)
            similar += int(same)
            session.answer(a, b, "similar" if same else "dissimilar", who=who)
        for a, b in session.log.pending():  # past the budget, or unknown to the oracle: skipped
            session.answer(a, b, "skip", who=who)
        row: dict[str, Any] = {
            "round": session.log.current_round(),
            "asked": len(batch),
            "similar": similar,
            "labels": len(session.labels()),
        }
        if update:
            row.update({k: v for k, v in session.update_model().items() if k != "n_labels"})
        rows.append(row)
        if report is not None:
            report(row)
    return rows
