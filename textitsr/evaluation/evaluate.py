"""Evaluate a model on one split of a source: embed through the feature cache, then score.

Embedding through the cache (backbone features once, then fusion + heads) gives the same embeddings
as `encode_pairs`/`encode_texts`, and makes re-evaluating another checkpoint on the same split cheap.
Given each pair's pixel change, the pair embeddings are read relative to their archive as an index
build reads them (`embedding.archive_change`), and a sentence that only says nothing changed is read
as a search reads it (`embedding.no_change_queries`), so the scores are those a search of the index
gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from textitsr.data.pairs import PairSource
from textitsr.embedding.archive_change import ArchiveChanges
from textitsr.embedding.cache import DEFAULT_CACHE_DIR, FeatureCache, build_or_load
from textitsr.embedding.encode import resolve_device
from textitsr.embedding.hubness import HUB_WEIGHT, hubness
from textitsr.embedding.no_change_queries import read_no_change
from textitsr.evaluation.metrics import retrieval_metrics


@torch.inference_mode()
def embed_cache(
    model: torch.nn.Module,
    cache: FeatureCache,
    pair_idx: np.ndarray | None = None,
    text_idx: np.ndarray | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(pair embeddings (n, d), text embeddings (u, d)) as float32 numpy, for the chosen pairs/texts."""
    was_training = model.training
    model.eval()
    try:
        pair_idx = np.arange(cache.n_pairs) if pair_idx is None else np.asarray(pair_idx)
        text_idx = np.arange(len(cache.texts)) if text_idx is None else np.asarray(text_idx)
        device = model.device
        pairs = [
            model.embed_pair_features(
                cache.pair_features(pair_idx[i : i + batch_size], device, model.uses_tokens)
            )
            .float()
            .cpu()
            for i in range(0, len(pair_idx), batch_size)
        ]
        texts = [
            model.embed_text_features(cache.text_features(text_idx[i : i + 4 * batch_size], device))
            .float()
            .cpu()
            for i in range(0, len(text_idx), 4 * batch_size)
        ]
    finally:
        model.train(was_training)
    d = model.embed_dim
    pair_emb = torch.cat(pairs).numpy() if pairs else np.zeros((0, d), np.float32)
    text_emb = torch.cat(texts).numpy() if texts else np.zeros((0, d), np.float32)
    text_emb = read_no_change(model, [cache.texts[i] for i in text_idx], text_emb)
    return pair_emb, text_emb


def evaluate_cache(
    model: torch.nn.Module,
    cache: FeatureCache,
    pair_idx: np.ndarray | None = None,
    hub_weight: float = HUB_WEIGHT,
    archive: ArchiveChanges | None = None,
) -> dict:
    """Full-gallery metrics of `model` on the cached split (or on the subset `pair_idx` of it).
    Pair -> text ranks captions as describing does: with the hubness correction against the gallery's
    pairs (`embedding.hubness`; `hub_weight=0` scores plain cosines). `archive` (one row per cached
    pair): read each pair relative to the gallery's pairs of its archive; None: each on its own."""
    pair_idx = np.arange(cache.n_pairs) if pair_idx is None else np.sort(np.asarray(pair_idx))
    offsets = cache.caption_offsets
    caption_pair = np.concatenate(
        [np.full(offsets[p + 1] - offsets[p], i) for i, p in enumerate(pair_idx)] or [np.zeros(0, np.int64)]
    )
    caption_text = np.concatenate(
        [cache.caption_text[offsets[p] : offsets[p + 1]] for p in pair_idx] or [np.zeros(0, np.int64)]
    )
    used_texts, caption_local = np.unique(caption_text, return_inverse=True)
    pair_emb, text_emb = embed_cache(model, cache, pair_idx, used_texts)
    if archive is not None:
        pair_emb = archive.subset(pair_idx).calibrate(model, pair_emb)
    sim = text_emb[caption_local] @ pair_emb.T
    penalty = hub_weight * hubness(text_emb, pair_emb)[caption_local] if hub_weight else None
    changed = cache.changed[pair_idx]
    labels = [cache.change_type[p] for p in pair_idx]
    return retrieval_metrics(
        sim,
        caption_pair,
        pair_changed=None if (changed < 0).any() else changed.astype(bool),
        pair_labels=labels if all(lbl is not None for lbl in labels) else None,
        caption_text=caption_local,
        sim_pair_to_pair=pair_emb @ pair_emb.T,
        caption_penalty=penalty,
    )


def evaluate_checkpoint(
    checkpoint: Path,
    source: PairSource,
    split: str | None = "test",
    device: str = "auto",
    cache_dir: Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> dict:
    """Load a checkpoint, cache the split's backbone features, and return its metrics (percent), the
    split's pairs read against their archive (as an index of it reads them: one more pass over the pixels)."""
    from textitsr.data.pairs import check_split
    from textitsr.models.checkpoint import load_checkpoint

    check_split(split)
    dev = resolve_device(device)
    model = load_checkpoint(Path(checkpoint), device=str(dev))
    cache = build_or_load(model, source, split, cache_dir, progress=progress)
    archive = ArchiveChanges.read(source.pairs(split), cache.pair_ids)
    metrics = evaluate_cache(model, cache, archive=archive)
    metrics["split"] = split
    metrics["source"] = source.name
    return metrics


def format_metrics(metrics: dict) -> str:
    """A short human-readable report of `retrieval_metrics` output (the CLI without --json)."""
    t2p, p2t = metrics["text_to_pair"], metrics["pair_to_text"]
    lines = [
        f"{metrics.get('source', '')} {metrics.get('split', '')}: {metrics['n_pairs']} pairs (gallery), "
        f"{metrics['n_queries']} change-caption queries, {metrics['n_captions']} captions",
        f"text->pair  R@1 {t2p['r1']:6.2f}  R@5 {t2p['r5']:6.2f}  R@10 {t2p['r10']:6.2f}",
        f"pair->text  R@1 {p2t['r1']:6.2f}  R@5 {p2t['r5']:6.2f}  R@10 {p2t['r10']:6.2f}",
        f"mR {metrics['mR']:.2f}",
    ]
    nc = metrics.get("no_change")
    if nc:
        lines.append(
            f"no-change queries ({nc['n_queries']}): "
            f"R@1 {nc['r1']:.2f}  R@5 {nc['r5']:.2f}  R@10 {nc['r10']:.2f}"
        )
    if metrics.get("map"):
        lines.append(
            "mAP (change type): "
            + "  ".join(f"{k} {v:.2f}" for k, v in metrics["map"].items() if v is not None)
        )
    return "\n".join(lines)
