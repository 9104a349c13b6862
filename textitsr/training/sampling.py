"""Batches for contrastive training: ONE caption per pair per epoch, with false negatives marked.

Why one caption per pair: treating each of a pair's 5 captions as its own sample puts the same pair
several times in a batch, where its other captions become "negatives" of it, and lets recall be
inflated by near-duplicates. Each epoch therefore shuffles the pairs and draws one of each pair's
captions at random.

Why masking rather than "at most one no-change pair per batch": no-change pairs are a third to a half
of LEVIR-CC, so capping them starves the batches or the epoch. Instead every batch carries a
(B, B) `false_negatives` mask that the loss removes from both softmaxes: entry (i, j) is True when
pairs i and j are both no-change, or when caption j's text is one of pair i's captions (or vice
versa) — template-like captions ("a road is built") recur across pairs, and pushing such a pair away
from a sentence that truly describes it is a wrong gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    pair_idx: np.ndarray  # (B,) indices into the feature cache's pairs
    text_idx: np.ndarray  # (B,) indices into the cache's unique texts (one caption drawn per pair)
    false_negatives: np.ndarray  # (B, B) bool, symmetric, False on the diagonal


class CaptionSampler:
    """Epoch-wise batches over `pairs` (cache indices), deterministic in (seed, epoch) so a resumed
    run sees exactly the batches the uninterrupted run would have seen."""

    def __init__(
        self,
        caption_offsets: np.ndarray,
        caption_text: np.ndarray,
        changed: np.ndarray,
        batch_size: int,
        seed: int = 0,
        pairs: np.ndarray | None = None,
    ) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {batch_size}")
        self.offsets = np.asarray(caption_offsets, dtype=np.int64)
        self.caption_text = np.asarray(caption_text, dtype=np.int64)
        self.changed = np.asarray(changed)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        n_caps = np.diff(self.offsets)
        candidates = np.arange(len(n_caps)) if pairs is None else np.asarray(pairs, dtype=np.int64)
        self.pairs = candidates[n_caps[candidates] > 0]  # pairs without captions cannot be trained on
        if len(self.pairs) < 2:
            raise ValueError(f"need at least 2 captioned pairs to train, got {len(self.pairs)}")
        # Padded (N, max_caps) matrix of each pair's text ids, -1 = none: for the false-negative test.
        max_caps = int(n_caps.max())
        self.pair_texts = np.full((len(n_caps), max_caps), -1, dtype=np.int64)
        for i, (a, b) in enumerate(zip(self.offsets[:-1], self.offsets[1:], strict=True)):
            self.pair_texts[i, : b - a] = self.caption_text[a:b]

    def __len__(self) -> int:
        """Batches per epoch: the remainder is spread over the batches (sizes batch_size..2*batch_size-1)
        rather than left as a tiny tail batch with almost nothing to contrast."""
        return max(1, len(self.pairs) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.pairs)
        n_caps = np.diff(self.offsets)[order]
        pick = self.offsets[order] + (rng.random(len(order)) * n_caps).astype(np.int64)
        texts = self.caption_text[pick]
        for chunk in np.array_split(np.arange(len(order)), len(self)):
            yield Batch(order[chunk], texts[chunk], self.false_negatives(order[chunk], texts[chunk]))

    def false_negatives(self, pair_idx: np.ndarray, text_idx: np.ndarray) -> np.ndarray:
        """(B, B) symmetric mask of off-diagonal entries that are not true negatives."""
        nochange = self.changed[pair_idx] == 0
        mask = nochange[:, None] & nochange[None, :]
        # describes[i, j]: text j is one of pair i's captions.
        describes = (self.pair_texts[pair_idx][:, :, None] == text_idx[None, None, :]).any(axis=1)
        mask |= describes | describes.T
        np.fill_diagonal(mask, False)
        return mask
