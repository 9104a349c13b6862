"""The hubness correction of describing: a sentence that fits every pair no longer tops every list."""

from __future__ import annotations

import numpy as np
import pytest

from textitsr.embedding.hubness import HUB_NEIGHBOURS, HUB_WEIGHT, archive_hubness, hubness
from textitsr.evaluation.metrics import retrieval_metrics
from textitsr.service import SearchService


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_hubness_is_the_mean_of_the_k_best_cosines() -> None:
    rng = np.random.default_rng(0)
    sentences, pairs = _unit(rng.normal(size=(7, 16))), _unit(rng.normal(size=(50, 16)))
    brute = np.sort(sentences @ pairs.T, axis=1)[:, -HUB_NEIGHBOURS:].mean(1)
    np.testing.assert_allclose(hubness(sentences, pairs), brute, rtol=1e-5)
    np.testing.assert_allclose(hubness(sentences, pairs[:5]), (sentences @ pairs[:5].T).mean(1), rtol=1e-5)
    assert hubness(sentences, np.zeros((0, 16))).tolist() == [0.0] * 7


def test_large_archives_are_measured_on_an_even_sample_at_the_same_top_share() -> None:
    rng = np.random.default_rng(2)
    sentences, pairs = _unit(rng.normal(size=(5, 16))), _unit(rng.normal(size=(2000, 16))).astype(np.float32)
    exact = hubness(sentences, pairs)
    np.testing.assert_allclose(archive_hubness(sentences, pairs, bank=2000), exact, rtol=1e-6)
    sample = pairs[np.linspace(0, 1999, 400).round().astype(int)]
    expected = np.sort(sentences @ sample.T, axis=1)[:, -4:].mean(1)  # top 20 of 2000 = top 4 of 400
    np.testing.assert_allclose(archive_hubness(sentences, pairs, bank=400), expected, rtol=1e-5)


def test_penalty_lets_each_pair_find_its_own_caption_past_a_hub() -> None:
    # Pair i's own caption is close to it; caption 0 ("there is no change") is close to every pair
    # and beats each own caption by cosine, so plain pair -> text ranking puts it first everywhere.
    rng = np.random.default_rng(1)
    n = 30
    pairs = _unit(rng.normal(size=(n, 32)))
    own = _unit(pairs + 0.3 * rng.normal(size=(n, 32)))
    hub = _unit(pairs.mean(0, keepdims=True))
    texts = np.concatenate([hub, own])
    sim = texts @ pairs.T
    sim[0] = sim[1:].max() + 0.05  # the hub outranks every own caption
    caption_pair = np.concatenate([[0], np.arange(n)])  # the hub caption belongs to pair 0
    plain = retrieval_metrics(sim, caption_pair)
    penalty = HUB_WEIGHT * hubness(texts, pairs)
    penalty[0] = HUB_WEIGHT * np.sort(sim[0])[-HUB_NEIGHBOURS:].mean()  # from its overwritten cosines
    corrected = retrieval_metrics(sim, caption_pair, caption_penalty=penalty)
    assert corrected["text_to_pair"] == plain["text_to_pair"]  # text -> pair is untouched
    assert plain["pair_to_text"]["r1"] < 5 and corrected["pair_to_text"]["r1"] > 70


@pytest.fixture(scope="module")
def service(tiny_archive) -> SearchService:
    return SearchService.open(tiny_archive.store)


def test_describe_ranks_by_cosine_less_hubness_over_the_archive(service: SearchService) -> None:
    caps = service.store.captions()
    first = ~caps["text"].duplicated().to_numpy()
    texts = caps["text"].to_numpy()[first]
    sentences = service.store.caption_embeddings()[first]
    pairs = service.store.pair_embeddings()
    row = service.catalog.pair_ids().index("train_000004")
    cosine = sentences @ pairs[row]
    score = cosine - HUB_WEIGHT * hubness(sentences, pairs)
    expected = texts[np.argsort(-score, kind="stable")[:5]].tolist()
    hits = service.describe_pair("train_000004", k=5)
    assert [h.text for h in hits] == expected
    np.testing.assert_allclose([h.score for h in hits], np.sort(score)[::-1][:5], rtol=1e-4, atol=1e-5)
    assert texts[np.argsort(-cosine)[:5]].tolist() != expected  # the correction changes this list
