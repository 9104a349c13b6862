"""ANNEAL selection (MGUE, BCGUE, clustering) and metric fine-tuning on small known problems."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from textitsr.active.anneal import (
    SelectionConfig,
    bcgue_uncertainty,
    best_threshold,
    candidate_pairs,
    candidate_uncertainty,
    diverse_top,
    fit_pair_classifier,
    mgue_uncertainty,
    pair_distances,
    pair_features,
    select_batch,
    split_threshold,
)
from textitsr.active.finetune import CaptionData, FinetuneConfig, embed_items, finetune
from textitsr.active.oracle import SimulatedOracle
from textitsr.errors import InputError
from textitsr.evaluation.metrics import pair_map_at_k


def clustered(n_per: int = 30, classes: int = 5, dim: int = 16, noise: float = 0.35, seed: int = 0):
    """Unit vectors around `classes` random centres: a metric space with known similar items."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    labels = np.repeat(np.arange(classes), n_per)
    emb = centres[labels] + noise * rng.standard_normal((len(labels), dim)) * np.linalg.norm(
        centres, axis=1
    ).mean() / np.sqrt(dim)
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), labels


# ---------------------------------------------------------------------------------- MGUE
def test_best_threshold_separates_known_distances():
    similar_d = np.array([0.05, 0.1, 0.2, 0.25, 0.3])
    dissimilar_d = np.array([0.6, 0.7, 0.8, 0.9, 1.2, 1.4])
    dist = np.concatenate([similar_d, dissimilar_d])
    sim = np.array([True] * 5 + [False] * 6)
    t = best_threshold(dist, sim)
    assert 0.3 < t < 0.6
    assert ((dist < t) == sim).all()


def test_best_threshold_needs_both_classes():
    with pytest.raises(InputError, match="one similar and one dissimilar"):
        best_threshold(np.array([0.1, 0.2]), np.array([True, True]))


def test_split_threshold_between_two_modes():
    rng = np.random.default_rng(1)
    # a tight near mode and a broad far one (where a 2-Gaussian mixture crosses inside the near mode)
    dist = np.concatenate([rng.normal(0.07, 0.03, 300), rng.normal(1.05, 0.2, 120)])
    assert 0.2 < split_threshold(dist) < 0.8


def test_mgue_uncertainty_highest_at_threshold():
    dist = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    unc = mgue_uncertainty(dist, 0.5)
    assert np.argmax(unc) == 2 and unc[2] == pytest.approx(1.0)
    assert unc[1] == pytest.approx(unc[3]) and unc[0] < unc[1]


# --------------------------------------------------------------------------------- BCGUE
@pytest.mark.slow
def test_bcgue_uncertainty_highest_near_the_boundary():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(400, 2))
    y = x[:, 0] > 0  # boundary x0 = 0
    clf = fit_pair_classifier(x, y)
    probe = np.array([[0.0, 0.0], [0.3, 1.0], [2.5, 0.0], [-2.5, -1.0]])
    unc = bcgue_uncertainty(clf.predict_proba(probe)[:, 1])
    assert unc[0] > 0.9
    assert unc[0] > unc[1] > unc[2] and unc[1] > unc[3]
    assert unc[2] < 0.1 and unc[3] < 0.1


def test_pair_features_are_symmetric():
    emb, _ = clustered(n_per=3)
    f = pair_features(emb, np.array([[0, 5], [5, 0]]))
    np.testing.assert_allclose(f[0], f[1])
    assert f.shape == (2, 2 * emb.shape[1])


# ----------------------------------------------------------------------------- candidates
def test_candidates_mix_neighbours_and_random_and_exclude_labelled():
    emb, labels = clustered()
    cands = candidate_pairs(emb, neighbors=4, random_partners=2, exclude=[(0, 1), (3, 2)])
    assert (cands[:, 0] < cands[:, 1]).all()
    assert len(np.unique(cands, axis=0)) == len(cands)
    keys = {tuple(p) for p in cands.tolist()}
    assert (0, 1) not in keys and (2, 3) not in keys
    same = labels[cands[:, 0]] == labels[cands[:, 1]]
    assert 0.2 < same.mean() < 0.95  # both similar and dissimilar questions are on the table


# ----------------------------------------------------------------------------- diversity
def test_clustering_picks_one_per_cluster_without_duplicates():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    feats = np.concatenate([c + 0.1 * rng.standard_normal((20, 2)) for c in centres])
    unc = rng.uniform(0.5, 1.0, len(feats))
    unc[:20] += 1.0  # cluster 0 is the most uncertain: top-b alone would ask only there
    pick = diverse_top(feats, unc, batch=4, pool_factor=20)
    assert len(set(pick.tolist())) == 4
    assert sorted((pick // 20).tolist()) == [0, 1, 2, 3]
    assert np.argsort(-unc)[:4].tolist() != pick.tolist()
    assert set((np.argsort(-unc)[:4] // 20).tolist()) == {0}


@pytest.mark.parametrize("strategy", ["mgue", "bcgue", "uncertainty", "random"])
def test_select_batch_never_repeats_labelled_pairs(strategy):
    emb, labels = clustered()
    oracle = SimulatedOracle({str(i): str(c) for i, c in enumerate(labels)})
    config = SelectionConfig(strategy=strategy, batch=8)
    done: list[tuple[int, int, bool]] = []
    for round_ in range(3):
        sel = select_batch(emb, done, config, seed=round_)
        keys = {(int(a), int(b)) for a, b in sel.pairs}
        assert len(keys) == 8
        assert not keys & {(a, b) for a, b, _ in done}
        done += [(int(a), int(b), oracle(str(a), str(b))) for a, b in sel.pairs]
    assert any(s for *_, s in done) and not all(s for *_, s in done)


def test_uncertainty_estimators_switch_from_cold_start():
    emb, labels = clustered()
    cands = candidate_pairs(emb)
    _, est, t = candidate_uncertainty(emb, cands, [], "mgue")
    assert est == "split" and t is not None
    lab = [(int(a), int(b), bool(labels[a] == labels[b])) for a, b in cands[:40]]
    assert candidate_uncertainty(emb, cands, lab, "mgue")[1] == "threshold"
    assert candidate_uncertainty(emb, cands, lab, "bcgue")[1] == "classifier"
    # the labelled threshold separates this clean space well
    d = pair_distances(emb, cands)
    same = labels[cands[:, 0]] == labels[cands[:, 1]]
    t = candidate_uncertainty(emb, cands, lab, "mgue")[2]
    assert ((d < t) == same).mean() > 0.9


def test_select_batch_rejects_bad_input():
    emb, _ = clustered(n_per=3)
    with pytest.raises(InputError, match="strategy"):
        SelectionConfig(strategy="greedy")
    with pytest.raises(InputError, match="outside"):
        select_batch(emb, [(0, 999, True)])


# ------------------------------------------------------------------------------ fine-tune
@dataclass
class Feats:
    before_global: torch.Tensor
    after_global: torch.Tensor
    before_tokens: torch.Tensor | None = None
    after_tokens: torch.Tensor | None = None


class TinyModel(nn.Module):
    """Stand-in with the TextITSR trainable-part interface: a linear pair head, a text head."""

    def __init__(self, d_in: int, d: int = 8) -> None:
        super().__init__()
        self.pair_head = nn.Linear(2 * d_in, d)
        self.text_head = nn.Linear(d_in, d)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))

    def embed_pair_features(self, f: Feats) -> torch.Tensor:
        return F.normalize(self.pair_head(torch.cat([f.before_global, f.after_global], dim=1)), dim=-1)

    def embed_text_features(self, t: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(t), dim=-1)


def tiny_problem(seed: int = 0, n_per: int = 25, classes: int = 4, d_in: int = 24):
    """Change type lives in a few 'after' dimensions; most variance is nuisance (scene content)."""
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(classes), n_per)
    signal = torch.randn(classes, 4, generator=g)[torch.as_tensor(labels)]
    before = 3.0 * torch.randn(len(labels), d_in, generator=g)
    after = before.clone()
    after[:, :4] += signal
    return Feats(before, after), labels


@pytest.mark.slow
def test_finetune_on_labels_improves_map_over_random_labels():
    torch.manual_seed(0)
    feats, labels = tiny_problem()
    base = TinyModel(feats.before_global.shape[1])
    before_map = pair_map_at_k(embed_items(base, feats), labels, k=20)
    emb = embed_items(base, feats)
    sel = select_batch(emb, [], SelectionConfig(batch=150, neighbors=8, random_partners=4))
    true = [(int(a), int(b), bool(labels[a] == labels[b])) for a, b in sel.pairs]
    rng = np.random.default_rng(0)
    fake = [(a, b, bool(rng.random() < np.mean([s for *_, s in true]))) for a, b, _ in true]
    config = FinetuneConfig(steps=150, lr=1e-2, text_weight=0.0)

    results = {}
    for name, lab in (("true", true), ("random", fake)):
        model = TinyModel(feats.before_global.shape[1])
        model.load_state_dict(base.state_dict())
        res = finetune(model, feats, lab, config=config)
        assert res.parameters == ["pair_head.weight", "pair_head.bias"]
        results[name] = pair_map_at_k(embed_items(model, feats), labels, k=20)
    assert results["true"] > before_map + 10
    assert results["true"] > results["random"] + 10


def test_finetune_keeps_text_head_and_uses_captions():
    feats, labels = tiny_problem(n_per=10)
    model = TinyModel(feats.before_global.shape[1])
    text_before = model.text_head.weight.detach().clone()
    caps = CaptionData(feats, torch.randn(40, feats.before_global.shape[1]), np.arange(40))
    res = finetune(model, feats, [(0, 1, True), (0, 20, False)], caps, FinetuneConfig(steps=5))
    assert len(res.losses) == 5
    assert torch.equal(model.text_head.weight, text_before)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_finetune_needs_labels():
    feats, _ = tiny_problem(n_per=2)
    with pytest.raises(InputError, match="no similar/dissimilar labels"):
        finetune(TinyModel(feats.before_global.shape[1]), feats, [])


def test_pair_map_at_k_perfect_and_shuffled():
    emb, labels = clustered(noise=0.05)
    assert pair_map_at_k(emb, labels, k=20) > 99
    rng = np.random.default_rng(0)
    assert pair_map_at_k(rng.standard_normal(emb.shape), labels, k=20) < 50


# ------------------------------------------------------------------------------ CLI round
def test_cli_annotate_one_simulated_round_end_to_end(tiny_archive, tmp_path):
    import json

    from typer.testing import CliRunner

    from textitsr.active.annotations import AnnotationLog
    from textitsr.cli import app
    from textitsr.index.store import Store

    work = tmp_path / "anneal"
    result = CliRunner().invoke(
        app,
        [
            "annotate",
            "--store",
            str(tiny_archive.store),
            "--out",
            str(work),
            "--strategy",
            "bcgue",
            "--batch",
            "6",
            "--rounds",
            "1",
            "--steps",
            "20",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])
    assert row["round"] == 1 and row["asked"] == 6 and row["labels"] == 6
    assert 0 <= row["pair_map20"] <= 100 and 0 <= row["text_mR"] <= 100

    log = AnnotationLog(work)
    assert len(log.labelled()) == 6 and log.pending() == [] and len(log.updates()) == 1
    base, tuned = Store.open(tiny_archive.store), Store.open(work / "store")
    assert len(tuned) == len(base) and tuned.checkpoint_id != base.checkpoint_id
    assert (work / "checkpoints" / "round-001" / "model.safetensors").is_file()
    assert not np.allclose(tuned.pair_embeddings(), base.pair_embeddings(), atol=1e-3)
    np.testing.assert_array_equal(tuned.caption_embeddings(), base.caption_embeddings())  # text side kept

    # the fine-tuned store opens with its own checkpoint through the service
    from textitsr.service import SearchService

    service = SearchService.open(work / "store")
    assert len(service.search_text("new buildings", k=3)) == 3
    # the saved model embeds a pair's images as the re-embedded store holds it (the fold is exact)
    pair_id = str(tuned.metadata()["pair_id"].iloc[5])
    before, after = service.catalog.thumbnails(pair_id)
    best = service.search_pair(before=before, after=after, k=1)[0]
    assert best.pair_id == pair_id and best.score > 0.98

    bad = CliRunner().invoke(
        app, ["annotate", "--store", str(tiny_archive.store), "--out", str(work), "--strategy", "greedy"]
    )
    assert bad.exit_code != 0


def test_held_out_labels_join_the_same_run_after_the_check():
    """One run: at `more_from` the model has seen exactly what a run of that many steps on the
    training labels alone sees (the held-out check is fair), then trains on all labels."""
    feats, labels = tiny_problem(n_per=10)
    asked = [(0, 1), (0, 15), (2, 3), (4, 30), (5, 6), (7, 35)]
    pairs = [(a, b, bool(labels[a] == labels[b])) for a, b in asked]
    train, held = pairs[:4], pairs[4:]
    config = FinetuneConfig(steps=12, lr=1e-2)
    short = TinyModel(feats.before_global.shape[1])
    start = {k: v.clone() for k, v in short.state_dict().items()}
    finetune(short, feats, train, config=FinetuneConfig(steps=8, lr=1e-2))

    run = TinyModel(feats.before_global.shape[1])
    run.load_state_dict(start)
    seen: list[np.ndarray] = []
    res = finetune(run, feats, train, config=config, more_labels=held, more_from=8,
                   before_more=lambda: seen.append(embed_items(run, feats)))
    assert len(seen) == 1 and len(res.losses) == 12
    np.testing.assert_allclose(seen[0], embed_items(short, feats), atol=1e-6)
    assert not np.allclose(embed_items(run, feats), seen[0], atol=1e-4)  # the held-out ones trained on
    with pytest.raises(InputError, match="more_from"):
        finetune(run, feats, train, config=config, more_labels=held, more_from=12)


def test_update_model_trains_once_with_named_steps_and_leaves_the_base_store(tiny_archive, tmp_path):
    from textitsr.active.rounds import AnnealSession
    from textitsr.index.store import Store

    base = Store.open(tiny_archive.store)
    before = np.array(base.pair_embeddings(), copy=True)
    meta = base.metadata()
    session = AnnealSession(tiny_archive.store, tmp_path / "work", finetune=FinetuneConfig(steps=40))
    ids, kinds = meta["pair_id"].astype(str).tolist(), meta["change_type"].astype(str).tolist()
    same = [(i, j) for i in range(len(ids)) for j in range(i + 1, len(ids)) if kinds[i] == kinds[j]]
    other = [(i, j) for i in range(len(ids)) for j in range(i + 1, len(ids)) if kinds[i] != kinds[j]]
    for (i, j), label in [(p, "similar") for p in same[:7]] + [(p, "dissimilar") for p in other[:7]]:
        session.answer(ids[i], ids[j], label)
    messages: list[str] = []
    metrics = session.update_model(lambda f, m: messages.append(m))
    keys = [m.split(":")[0] for m in messages]
    steps = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]  # the named steps in order
    assert metrics["n_heldout"] == 4 and 0 <= metrics["heldout_agreement"] <= 100
    assert [s.split(" ")[0] for s in steps][:4] == ["loading", "training", "held-out", "training"]
    assert sum("step 1/" in m for m in messages) == 1  # one training run, not a check run and another
    assert steps[-3:] == ["re-embedding the archive and writing its copy", "measuring the new space", "done"]
    # the copy links the base store's files: the base's embeddings are never the file written
    np.testing.assert_array_equal(Store.open(tiny_archive.store).pair_embeddings(), before)
    assert not np.allclose(Store.open(tmp_path / "work" / "store").pair_embeddings(), before, atol=1e-4)
