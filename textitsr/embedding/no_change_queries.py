"""Sentences that only say nothing changed are read by their change-type part.

Why: "there is no change" names no scene, so the contrastive and caption parts of its embedding
match every calm-looking pair about alike, and the order they give among an archive's pairs follows
their look rather than their change. What the sentence asks is in its change-type part (p(none) ~ 1),
which is the part an index reads against the pair's archive (`embedding.archive_change`). So such a
sentence's type part is scaled by 1 + NO_CHANGE_EMPHASIS * max(0, 2 p(none) - 1) and the vector is
brought back to its length: its score of a pair leans on the change reading. A sentence that names
anything else ("the fields and the village look the same") keeps its reading, so it still finds its
own scene. Measured leave-source-out (benchmarks/results/real-leave-source-out.md): ranking changed
against unchanged pairs per source rises above plain pixel difference on average, with caption
retrieval unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

#: How much more a "no change" sentence's type part weighs (0 turns the reading off).
NO_CHANGE_EMPHASIS = 5.0
#: Words of a sentence that speaks of change and nothing else (function words, "same", "scene").
CHANGE_ONLY_WORDS = frozenset(
    """a an the there is are was were be been being has have had it its this that these those of in on
    at between from to and or both two as any all only here their than over during can seems seem seen
    look looks looked appear appears appeared stay stays stayed remain remains remained still kept same
    identical unchanged unaltered alike similar no not nothing none without change changes changed
    changing difference differences different differ differs visible obvious apparent significant
    notable major noticeable real new scene scenes image images picture pictures photo photos area place
    view views date dates time times before after then now first second year years period pair shown
    show shows occurred happened happen occur everything anything little much very just exactly
    completely entirely basically almost mostly""".split()
)
_WORD = re.compile(r"[^\W\d_]+")


def names_only_change(text: str) -> bool:
    """Whether every word of `text` is one of CHANGE_ONLY_WORDS (digits and punctuation aside)."""
    words = _WORD.findall(text.lower())
    return bool(words) and all(w in CHANGE_ONLY_WORDS for w in words)


def query_type_part(model: Any) -> slice | None:
    """Where `model`'s sentence embeddings hold a change-type part to lean on: both heads' type parts
    still read as sqrt(p) (a fine-tuned pair head is left alone, as the archive reading leaves it).
    A text side without its pair head says so in `pair_type_part`. None otherwise."""
    from textitsr.models.probes import head_type_part

    text_part = head_type_part(getattr(model, "text_head", None))
    pair_head = getattr(model, "pair_head", None)
    pair_part = head_type_part(pair_head) if pair_head is not None else getattr(model, "pair_type_part", None)
    return text_part if text_part is not None and text_part == pair_part else None


def read_no_change(model: Any, texts: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
    """`emphasise_no_change` with `model`'s `query_type_part`, looked up only when one of `texts` is
    change-only (the lookup compares a head's final map with the identity: not every query's cost)."""
    if not any(names_only_change(t) for t in texts):
        return embeddings
    return emphasise_no_change(texts, embeddings, query_type_part(model))


def emphasise_no_change(
    texts: Sequence[str], embeddings: np.ndarray, part: slice | None, emphasis: float = NO_CHANGE_EMPHASIS
) -> np.ndarray:
    """`embeddings` of `texts` (unit rows, in order) with each change-only "no change" sentence's type
    part scaled up and the row brought back to its length; other rows, and all rows without a type
    part or emphasis, unchanged."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts but {len(embeddings)} embeddings")
    if part is None or not emphasis or not len(embeddings):
        return embeddings
    rows = np.flatnonzero([names_only_change(t) for t in texts])
    if not len(rows):
        return embeddings
    values = np.asarray(embeddings[rows], dtype=np.float64)
    type_values = values[:, part] ** 2
    total = type_values.sum(axis=1)
    p_none = np.divide(type_values[:, 0], total, out=np.zeros_like(total), where=total > 0)
    scale = 1.0 + emphasis * np.maximum(0.0, 2.0 * p_none - 1.0)
    length = np.linalg.norm(values, axis=1, keepdims=True)
    values[:, part] *= scale[:, None]
    values *= length / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    out = np.array(embeddings, copy=True)
    out[rows] = values.astype(out.dtype)
    return out
