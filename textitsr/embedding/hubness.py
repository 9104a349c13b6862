"""Hubness correction for describing a pair: demote sentences that sit close to every pair.

In a shared text/image space some sentences are hubs: "there is no change" or "many buildings are
built" score high against most pairs of an archive, so they crowd the top of every pair's list of
describing sentences whatever the pair shows. Cross-domain similarity local scaling (CSLS; Conneau et
al., "Word translation without parallel data", ICLR 2018) corrects this by subtracting from each
sentence's score its mean similarity to its k nearest pairs:

    describe score(sentence, pair) = cos(sentence, pair) - weight * mean top-k cos(sentence, archive pairs)

Only the ranking of sentences for a pair changes; text -> pair and pair -> pair search stay exact
cosines (the correction is a per-sentence constant there). The weight and k were chosen under the
leave-source-out protocol (benchmarks/results/real-leave-source-out.md), where the archive is the
held-out gallery: the pairs a user searches, never their labels.
"""

from __future__ import annotations

import numpy as np

#: Neighbours each sentence's hubness is averaged over, and how much of it is subtracted.
HUB_NEIGHBOURS = 20
HUB_WEIGHT = 0.6
#: Archives with more pairs are measured against an even sample of this many (same top share).
HUB_BANK = 4096
_CHUNK = 4096


def hubness(sentences: np.ndarray, pairs: np.ndarray, k: int = HUB_NEIGHBOURS) -> np.ndarray:
    """(S,) mean of each sentence vector's k highest inner products with the pair vectors (all of
    them when there are fewer); zeros when there are no pairs."""
    sentences = np.atleast_2d(np.asarray(sentences, dtype=np.float32))
    pairs = np.atleast_2d(np.asarray(pairs, dtype=np.float32))
    if not len(pairs) or not len(sentences):
        return np.zeros(len(sentences), np.float32)
    k = min(k, len(pairs))
    out = np.empty(len(sentences), np.float32)
    for start in range(0, len(sentences), _CHUNK):  # bounded memory for large caption sets
        sim = sentences[start : start + _CHUNK] @ pairs.T
        out[start : start + _CHUNK] = np.partition(sim, len(pairs) - k, axis=1)[:, -k:].mean(1)
    return out


def archive_hubness(sentences: np.ndarray, pair_vectors: np.ndarray, bank: int = HUB_BANK) -> np.ndarray:
    """`hubness` against an archive's pairs: all of them up to `bank` pairs; beyond, an even sample of
    `bank` rows (a memory-mapped array reads only those) with k scaled to the same top share, so the
    first description of a 10M-pair archive takes seconds, not a search per sentence."""
    n = len(pair_vectors)
    if n <= bank:
        return hubness(sentences, np.asarray(pair_vectors, dtype=np.float32))
    rows = np.unique(np.linspace(0, n - 1, bank).round().astype(np.int64))
    k = max(1, round(HUB_NEIGHBOURS * len(rows) / n))
    return hubness(sentences, np.asarray(pair_vectors[rows], dtype=np.float32), k)
