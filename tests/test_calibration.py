"""A text query that matches nothing well is told apart from real descriptions of the archive."""

from __future__ import annotations

import numpy as np

from textitsr.index.calibration import calibrate_text_matches


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_real_descriptions_score_above_the_low_bound_and_noise_below():
    rng = np.random.default_rng(0)
    pairs = _unit(rng.normal(size=(500, 64)))
    captions = _unit(pairs[rng.integers(0, 500, 800)] + 0.6 * rng.normal(size=(800, 64)) / 8)
    cal = calibrate_text_matches(captions, pairs, sample=300)
    assert cal.n_queries == 300 and cal.low < cal.median
    held_out = _unit(pairs[:50] + 0.6 * rng.normal(size=(50, 64)) / 8)  # new real descriptions
    assert np.mean([cal.is_low(float((q @ pairs.T).max())) for q in held_out]) <= 0.1
    noise = _unit(rng.normal(size=(50, 64)))  # queries unlike anything in the archive
    assert all(cal.is_low(float((q @ pairs.T).max())) for q in noise)


def test_an_archive_without_captions_flags_nothing():
    cal = calibrate_text_matches(np.zeros((0, 8), np.float32), _unit(np.ones((3, 8))))
    assert cal.n_queries == 0 and not cal.is_low(-1.0)
