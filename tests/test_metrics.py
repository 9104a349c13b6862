"""Retrieval metrics on hand-made similarity matrices whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from textitsr.errors import InputError
from textitsr.evaluation.metrics import (
    mean_average_precision,
    random_baseline,
    ranks_of_best_relevant,
    recall_at_k,
    retrieval_metrics,
)


def test_ranks_and_recall_by_hand() -> None:
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.5]])
    relevant = np.eye(3, dtype=bool)
    # query 0: own item best -> 0; query 1: item 2 above -> 1; query 2: items 0, 1 above -> 2
    assert ranks_of_best_relevant(sim, relevant).tolist() == [0, 1, 2]
    assert recall_at_k(np.array([0, 1, 2]), ks=(1, 2, 3)) == pytest.approx(
        {"r1": 100 / 3, "r2": 200 / 3, "r3": 100}
    )


def test_ties_count_against_the_query() -> None:
    # A constant model must not score 100%: every tied irrelevant item ranks above the relevant one.
    ranks = ranks_of_best_relevant(np.zeros((4, 4)), np.eye(4, dtype=bool))
    assert ranks.tolist() == [3, 3, 3, 3]


def test_average_precision_by_hand() -> None:
    # ranking: rel, irr, rel, irr -> AP = (1/1 + 2/3) / 2 = 0.8333
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    relevant = np.array([[True, False, True, False]])
    assert mean_average_precision(sim, relevant) == pytest.approx(100 * (1 + 2 / 3) / 2)


def _toy_split():
    """3 pairs: 0 and 1 changed, 2 unchanged; 2 captions each (pair 2's shared no-change sentence)."""
    caption_pair = np.array([0, 0, 1, 1, 2, 2])
    caption_text = ["a road", "new road", "two houses", "houses built", "no change", "no change"]
    # rows = captions, cols = pairs
    sim = np.array(
        [
            [0.9, 0.1, 0.0],  # cap0 -> pair0 rank 0
            [0.2, 0.8, 0.1],  # cap1 -> pair0 rank 1
            [0.1, 0.7, 0.3],  # cap2 -> pair1 rank 0
            [0.6, 0.5, 0.4],  # cap3 -> pair1 rank 1
            [0.0, 0.1, 0.9],  # no-change cap -> pair2 rank 0
            [0.5, 0.1, 0.3],  # no-change cap -> pair2 rank 1
        ]
    )
    return sim, caption_pair, np.array([True, True, False]), caption_text


def test_strict_protocol_by_hand() -> None:
    sim, caption_pair, changed, caption_text = _toy_split()
    m = retrieval_metrics(
        sim,
        caption_pair,
        changed,
        pair_labels=["road", "building", "none"],
        caption_text=caption_text,
        sim_pair_to_pair=np.eye(3),
    )
    # text->pair: only the 4 change captions query; ranks 0,1,0,1 over the full 3-pair gallery.
    assert m["text_to_pair"] == pytest.approx({"r1": 50.0, "r5": 100.0, "r10": 100.0})
    assert m["n_queries"] == 4 and m["n_pairs"] == 3 and m["n_captions"] == 6
    # no-change captions report separately: ranks 0 and 1 -> R@1 50%.
    assert m["no_change"]["r1"] == pytest.approx(50.0) and m["no_change"]["n_queries"] == 2
    # pair->text (columns): pair0's own cap0 (0.9) is top -> 0; pair1's best own caption cap2 (0.7)
    # is beaten by cap1 (0.8) -> 1; pair2's own "no change" (0.9) is top -> 0.
    assert m["pair_to_text"] == pytest.approx({"r1": 200 / 3, "r5": 100.0, "r10": 100.0})
    assert m["mR"] == pytest.approx((50 + 100 + 100 + 200 / 3 + 100 + 100) / 6)
    # mAP text->pair with change-type labels: each label is unique, so AP = 1/(rank+1).
    expected = np.mean([1, 1 / 2, 1, 1 / 2, 1, 1 / 2]) * 100
    assert m["map"]["text_to_pair"] == pytest.approx(expected)


def test_identical_caption_texts_are_interchangeable_in_pair_to_text() -> None:
    # Two no-change pairs share the sentence "no change": pair 1 ranking pair 0's copy of it first
    # is not an error (the two strings embed identically).
    caption_pair = np.array([0, 1, 2])
    texts = ["no change", "no change", "a road"]
    sim = np.array([[0.9, 0.9, 0.1], [0.8, 0.8, 0.1], [0.1, 0.1, 0.9]])  # captions x pairs
    changed = np.array([False, False, True])
    strict = retrieval_metrics(sim, caption_pair, changed)
    lenient = retrieval_metrics(sim, caption_pair, changed, caption_text=texts)
    assert strict["pair_to_text"]["r1"] == pytest.approx(200 / 3)  # pair1's own caption ranks 2nd
    assert lenient["pair_to_text"]["r1"] == pytest.approx(100.0)


def test_perfect_and_reversed_retrieval() -> None:
    n = 20
    caption_pair = np.repeat(np.arange(n), 2)
    perfect = np.eye(n)[caption_pair]
    assert retrieval_metrics(perfect, caption_pair)["mR"] == pytest.approx(100.0)
    worst = -perfect
    m = retrieval_metrics(worst, caption_pair)
    assert m["text_to_pair"]["r10"] == 0.0 and m["pair_to_text"]["r10"] == 0.0


def test_random_baseline_matches_k_over_n() -> None:
    n = 50
    caption_pair = np.repeat(np.arange(n), 5)
    chance = random_baseline(caption_pair, trials=20)
    assert chance["t2p_r10"] == pytest.approx(100 * 10 / n, abs=2.0)
    assert chance["t2p_r1"] == pytest.approx(100 * 1 / n, abs=1.0)


def test_bad_input_is_reported() -> None:
    with pytest.raises(InputError, match="one pair index per caption"):
        retrieval_metrics(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(InputError, match="change pair"):
        retrieval_metrics(np.zeros((2, 2)), np.array([0, 1]), pair_changed=np.array([False, False]))
