"""Probed heads: change-type and caption probes joined to the contrastive embedding; fitted, saved,
loaded by the text side, folded with an adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from textitsr.errors import InputError
from textitsr.models.probes import (
    CAPTION_DIM,
    CHANGE_TYPES,
    ProbedHead,
    TypeProbe,
    known_types,
    type_reading,
)
from textitsr.training.probes import source_balance


def test_known_types_maps_aliases_and_refuses_partial_answers() -> None:
    assert known_types("buildings_built+road_built") == ("buildings_built", "road_built")
    assert known_types(["vegetation_cleared_for_buildings"]) == ("buildings_built", "vegetation_cleared")
    assert known_types("road_laid") == ("road_built",)
    assert known_types("buildings_demolished+other") == ()  # never taught half of what it shows
    assert known_types(None) == () and known_types("") == ()


def _clusters(
    rng: np.random.Generator, n: int = 40, dim: int = 24
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Three types, each a Gaussian blob around its own centre."""
    centres = rng.normal(0, 3, (3, dim))
    types = ("none", "buildings_built", "water_expanded")
    x = np.vstack([c + rng.normal(0, 1, (n, dim)) for c in centres])
    return x.astype(np.float32), [(types[i],) for i in range(3) for _ in range(n)]


def test_type_probe_learns_the_types_it_saw_and_never_guesses_the_others() -> None:
    rng = np.random.default_rng(0)
    x, y = _clusters(rng)
    probe = TypeProbe(x.shape[1])
    counts = probe.fit(x, y, c=1.0)
    assert counts == {"none": 40, "buildings_built": 40, "water_expanded": 40}
    p = probe.probabilities(torch.from_numpy(x)).numpy()
    predicted = [CHANGE_TYPES[i] for i in p.argmax(1)]
    assert np.mean([pr == t[0] for pr, t in zip(predicted, y, strict=True)]) > 0.95
    unseen = [CHANGE_TYPES.index(t) for t in CHANGE_TYPES if t not in counts]
    assert p[:, unseen].max() < 1e-6
    assert torch.allclose(probe(torch.from_numpy(x)).norm(dim=1), torch.ones(len(x)), atol=1e-5)


def test_source_balance_gives_every_source_the_same_say_at_power_one() -> None:
    sources = ["series"] * 9 + ["event"] + [None, None]
    w = source_balance(sources, 1.0)
    assert w.mean() == pytest.approx(1.0)
    assert w[:9].sum() == pytest.approx(w[9]) == pytest.approx(w[10]) == pytest.approx(w[11])
    assert np.allclose(source_balance(sources, 0.0), 1.0)
    half = source_balance(sources, 0.5)
    assert half[:9].sum() / half[9] == pytest.approx(3.0)  # sqrt(9) pairs' worth


def test_row_weights_decide_between_sources_that_disagree() -> None:
    """A long unchanged time series and one event show alike features with different labels: by
    pair count the series wins; balanced per source, the two weigh the same."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.05, (40, 6)).astype(np.float32)
    x[:, 0] += np.r_[np.zeros(20), np.ones(20)] * 4.0  # a second, unambiguous cluster of each type
    unchanged, cleared_label = ("none",), ("vegetation_cleared",)
    labels = [unchanged] * 15 + [cleared_label] * 5 + [unchanged] * 10 + [cleared_label] * 10
    sources = ["series"] * 15 + ["event"] * 5 + ["a"] * 10 + ["b"] * 10
    ambiguous = torch.from_numpy(x[:20])
    plain, balanced = TypeProbe(6), TypeProbe(6)
    plain.fit(x, labels, c=1.0)
    balanced.fit(x, labels, c=1.0, row_weights=source_balance(sources, 1.0))
    none, cleared = CHANGE_TYPES.index("none"), CHANGE_TYPES.index("vegetation_cleared")
    p_plain = plain.probabilities(ambiguous).numpy().mean(0)
    p_balanced = balanced.probabilities(ambiguous).numpy().mean(0)
    assert p_plain[none] > 0.65
    assert abs(p_balanced[none] - p_balanced[cleared]) < 0.15


def test_type_probe_needs_two_types() -> None:
    with pytest.raises(InputError, match="at least 2 types"):
        TypeProbe(4).fit(np.zeros((3, 4)), [("none",)] * 3, c=1.0)


def _fitted_heads(
    rng: np.random.Generator, weights: tuple[float, float]
) -> tuple[ProbedHead, ProbedHead, np.ndarray, np.ndarray]:
    """A pair head and a text head whose probes are fitted on clusters, and what they were fitted on;
    the 'texts' are the pairs' features seen through a fixed random map plus noise (a stand-in for
    a caption's sentence embedding)."""
    x, y = _clusters(rng, n=60, dim=16)
    to_text = rng.normal(0, 1, (16, 200)).astype(np.float32)
    sentences = x @ to_text + rng.normal(0, 0.5, (len(x), 200)).astype(np.float32)
    pair = ProbedHead(16, 160, None, 0.0, type_weight=weights[0], caption_weight=weights[1], sentences=False)
    text = ProbedHead(200, 160, None, 0.0, type_weight=weights[0], caption_weight=weights[1], sentences=True)
    pair.types.fit(x, y, c=1.0)
    text.types.fit(sentences, y, c=1.0)
    basis = text.captions.fit_basis(sentences)
    unit = sentences / np.linalg.norm(sentences, axis=1, keepdims=True)
    pair.captions.fit_regression(x, unit @ basis.T, alpha=1.0)
    return pair.eval(), text.eval(), x, sentences


def test_probed_similarity_is_the_weighted_sum_of_its_parts() -> None:
    rng = np.random.default_rng(1)
    pair, text, _, _ = _fitted_heads(rng, (0.3, 0.4))
    a, b = torch.randn(5, 16), torch.randn(7, 200)
    with torch.no_grad():
        sim = pair(a) @ text(b).T
        cos = pair.projection(a) @ text.projection(b).T
        agreement = pair.types(a) @ text.types(b).T  # Bhattacharyya coefficient of the type distributions
        caption = pair.captions(a) @ text.captions(b).T
    assert pair(a).shape == (5, 160) and pair.projection.out_dim == 160 - len(CHANGE_TYPES) - CAPTION_DIM
    assert torch.allclose(sim, 0.3 * cos + 0.3 * agreement + 0.4 * caption, atol=1e-5)


def test_fitted_probes_match_pairs_to_their_own_captions() -> None:
    """Only the probes speak (the projection is untrained noise): each pair's best text is one of its
    own cluster's far more often than chance (1/3)."""
    rng = np.random.default_rng(2)
    pair, text, x, sentences = _fitted_heads(rng, (0.45, 0.45))
    with torch.no_grad():
        sim = pair(torch.from_numpy(x)) @ text(torch.from_numpy(sentences)).T
    cluster = np.arange(len(x)) // 60
    assert (cluster[sim.argmax(1).numpy()] == cluster).mean() > 0.9


def test_unfitted_probes_leave_the_contrastive_ranking_unchanged() -> None:
    head = ProbedHead(8, 200, None, 0.0, type_weight=0.2, caption_weight=0.5, sentences=False).eval()
    x = torch.randn(6, 8)
    with torch.no_grad():
        probed = head(x) @ head(x[:2]).T
        plain = head.projection(x) @ head.projection(x[:2]).T
    assert torch.equal(probed.argsort(0), plain.argsort(0))
    assert not any(p.requires_grad for p in [*head.types.parameters(), *head.captions.parameters()])


@pytest.mark.parametrize(("types", "captions"), [(-0.1, 0.0), (1.0, 0.0), (0.5, 0.5)])
def test_probe_weights_must_leave_the_contrastive_part_a_share(types: float, captions: float) -> None:
    from textitsr.models.textitsr import ModelConfig

    with pytest.raises(InputError, match="weight"):
        ModelConfig(type_weight=types, caption_weight=captions)


def test_probed_checkpoint_round_trip_text_side_and_adapter_fold(tmp_path: Path) -> None:
    """A probed model saves and loads bit for bit; its text half alone embeds like the whole model;
    a fine-tune trains the projection, never the fitted probes; an embedding adapter folded into its
    pair head equals the adapter applied to stored embeddings."""
    from textitsr.active.finetune import EmbeddingAdapter, fold_adapter, pair_side_parameters
    from textitsr.models.checkpoint import load_checkpoint, save_checkpoint, type_reading_part
    from textitsr.models.fusion import PairFeatures
    from textitsr.models.text_side import load_text_side
    from textitsr.models.textitsr import ModelConfig, TextITSR

    torch.manual_seed(0)
    model = TextITSR(ModelConfig(fusion="gff:concat+absdiff", type_weight=0.2, caption_weight=0.5))
    rng = np.random.default_rng(3)
    dim = model.fusion.out_dim
    x, y = _clusters(rng, n=50, dim=dim)
    model.pair_head.types.fit(x, y, c=0.1)
    texts = ["new houses are built", "nothing has changed", "the river floods the fields"]
    sentences = model.backbone_text_features(texts * 50).numpy() + rng.normal(0, 0.05, (150, 384))
    model.text_head.types.fit(sentences, y, c=0.1)
    basis = model.text_head.captions.fit_basis(sentences)
    model.pair_head.captions.fit_regression(x, sentences @ basis.T, alpha=10.0)
    save_checkpoint(model, tmp_path / "model")
    loaded = load_checkpoint(tmp_path / "model")
    g = rng.normal(0, 1, (4, dim // 3)).astype(np.float32)
    feats = PairFeatures(torch.from_numpy(g), torch.from_numpy(g[::-1].copy()))
    with torch.no_grad():
        assert torch.equal(model.embed_pair_features(feats), loaded.embed_pair_features(feats))
    queries = ["a new road is laid", "the forest is cut down"]
    assert torch.allclose(load_text_side(tmp_path / "model").encode_texts(queries),
                          loaded.encode_texts(queries), atol=1e-6)
    trained = pair_side_parameters(loaded, feats)
    assert trained and all(n.startswith("pair_head.projection.") for n in trained)  # probes stay fitted
    adapter = EmbeddingAdapter(model.embed_dim, model.logit_scale)
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(model.embed_dim) + 0.1 * torch.randn(model.embed_dim, model.embed_dim))
        stored = loaded.embed_pair_features(feats)
        want = torch.nn.functional.normalize(stored @ adapter.weight.T, dim=-1)
        fold_adapter(loaded, adapter)
        assert torch.allclose(loaded.embed_pair_features(feats), want, atol=1e-5)
    # the type part of a stored embedding reads back as the probe's distribution, until a fine-tune
    part = type_reading_part(tmp_path / "model")
    reading = type_reading(model.embed_pair_features(feats)[0].detach().numpy(), part)
    probs = model.pair_head.types.probabilities(model.fusion(feats))[0]
    assert np.allclose([reading[t] for t in CHANGE_TYPES], probs.detach().numpy(), atol=1e-5)
    save_checkpoint(loaded, tmp_path / "fine-tuned")
    assert type_reading_part(tmp_path / "fine-tuned") is None
