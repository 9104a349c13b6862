"""A text query that matches nothing well is told apart from real descriptions of the archive."""

from __future__ import annotations

import numpy as np

from textitsr.index.calibration import calibrate_text_matches


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _archive(seed: int = 0):
    """500 pairs; 800 captions, each a noisy copy of the pair it describes."""
    rng = np.random.default_rng(seed)
    pairs = _unit(rng.normal(size=(500, 64)))
    owners = rng.integers(0, 500, 800)
    captions = _unit(pairs[owners] + 0.6 * rng.normal(size=(800, 64)) / 8)
    return rng, pairs, owners, captions


def test_real_descriptions_stand_out_and_noise_does_not():
    rng, pairs, owners, captions = _archive()
    cal = calibrate_text_matches(captions, pairs, sample=300, caption_pairs=owners)
    assert cal.n_queries == 300 and cal.low < cal.median

    def weak(q: np.ndarray) -> bool:
        return cal.is_low(q, float((q @ pairs.T).max()))

    held_out = _unit(pairs[:50] + 0.6 * rng.normal(size=(50, 64)) / 8)  # new real descriptions
    assert np.mean([weak(q) for q in held_out]) <= 0.1
    noise = _unit(rng.normal(size=(50, 64)))  # queries unlike anything in the archive
    assert all(weak(q) for q in noise)


def test_the_contrast_does_not_depend_on_the_score_level():
    """A query whose scores are all shifted up (a wording every pair resembles a bit) is not
    trusted more for it: only how far its best pair stands out counts."""
    rng, pairs, owners, captions = _archive(1)
    cal = calibrate_text_matches(captions, pairs, caption_pairs=owners)
    q = _unit(pairs[3] + 0.6 * rng.normal(size=64) / 8)
    best = float((q @ pairs.T).max())
    shifted = _unit(q + 2.0 * _unit(pairs.mean(axis=0)))  # closer to every pair
    assert cal.contrast(shifted, float((shifted @ pairs.T).max())) < cal.contrast(q, best)


def test_confidence_ranks_a_sentence_against_the_archives_own_captions():
    _, pairs, owners, captions = _archive(2)
    cal = calibrate_text_matches(captions, pairs, caption_pairs=owners)
    own = (captions * pairs[owners]).sum(axis=1)
    assert cal.confidence(float(np.median(own))) == np.clip(cal.confidence(float(np.median(own))), 0.4, 0.6)
    assert cal.confidence(float(own.min()) - 0.5) == 0.0 and cal.confidence(1.0) == 1.0


def test_an_archive_without_captions_flags_nothing():
    cal = calibrate_text_matches(np.zeros((0, 8), np.float32), _unit(np.ones((3, 8))))
    assert cal.n_queries == 0 and not cal.is_low(_unit(np.ones(8)), -1.0) and cal.confidence(0.5) is None


def test_a_query_unlike_every_caption_is_weak_even_when_its_best_pair_stands_out():
    rng, pairs, owners, captions = _archive(3)
    cal = calibrate_text_matches(captions, pairs, caption_pairs=owners)
    assert -1.0 < cal.text_low <= 0.55  # capped: template captions must not make every query novel
    q = _unit(pairs[7] + 0.6 * rng.normal(size=64) / 8)  # a real description: stands out
    best = float((q @ pairs.T).max())
    assert not cal.is_low(q, best, best_caption=float((captions @ q).max()))
    assert cal.is_low(q, best, best_caption=cal.text_low - 0.01)
