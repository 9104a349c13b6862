"""Contrastive training: the loss, the one-caption-per-pair sampler with no-change masking, learning
on learnable features, and exact resumption after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textitsr.embedding.cache import FeatureCache
from textitsr.training.losses import info_nce
from textitsr.training.sampling import CaptionSampler
from textitsr.training.train import TrainConfig, TrainData, fit, load_training_state

# ------------------------------------------------------------------------------------------ loss


def test_loss_is_symmetric_and_minimal_when_aligned() -> None:
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(16, 32), dim=1)
    other = F.normalize(torch.randn(16, 32), dim=1)
    scale = torch.tensor(np.log(50.0))
    # Symmetric: swapping the roles of the two modalities gives the same loss.
    assert info_nce(emb, other, scale) == pytest.approx(float(info_nce(other, emb, scale)), rel=1e-6)
    aligned = float(info_nce(emb, emb, scale))
    shuffled = float(info_nce(emb, emb[torch.randperm(16)], scale))
    assert aligned < 0.05 < shuffled
    # The scale is clamped at 100: a runaway parameter gives the same loss as log(100).
    assert float(info_nce(emb, other, torch.tensor(20.0))) == pytest.approx(
        float(info_nce(emb, other, torch.tensor(np.log(100.0)))), rel=1e-5
    )


def test_masked_false_negatives_do_not_count() -> None:
    # Pairs 0 and 1 are both "no change" with the same caption: without the mask the loss cannot be
    # small (each is confused with the other); with it, they are not each other's negatives.
    pair = F.normalize(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=1)
    scale = torch.tensor(np.log(100.0))
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    unmasked = float(info_nce(pair, pair, scale))
    masked = float(info_nce(pair, pair, scale, mask))
    assert unmasked > 0.3 and masked < 1e-3


# --------------------------------------------------------------------------------------- sampler


def _caption_layout():
    # 6 pairs: 0-3 changed with 3/2/1/0 captions (pair 3 has none), 4-5 unchanged sharing text 9;
    # pairs 0 and 1 share text 2 ("a road was built" said of both).
    captions = [[0, 1, 2], [2, 3], [4], [], [9, 9], [9]]
    offsets = np.cumsum([0] + [len(c) for c in captions])
    caption_text = np.array([t for c in captions for t in c])
    changed = np.array([1, 1, 1, 1, 0, 0])
    return captions, offsets, caption_text, changed


def test_sampler_draws_one_caption_per_pair_per_epoch() -> None:
    captions, offsets, caption_text, changed = _caption_layout()
    sampler = CaptionSampler(offsets, caption_text, changed, batch_size=2, seed=3)
    drawn: dict[int, set[int]] = {i: set() for i in range(6)}
    for epoch in range(1, 30):
        batches = list(sampler.epoch(epoch))
        pairs = np.concatenate([b.pair_idx for b in batches])
        assert sorted(pairs.tolist()) == [0, 1, 2, 4, 5]  # each captioned pair exactly once
        assert all(len(b.pair_idx) >= 2 for b in batches)  # no lonely tail batch
        for b in batches:
            for p, t in zip(b.pair_idx, b.text_idx, strict=True):
                assert t in captions[p]
                drawn[p].add(int(t))
    assert drawn[0] == {0, 1, 2} and drawn[1] == {2, 3}  # every caption gets its turn
    # Deterministic in (seed, epoch): a resumed run replays the same batches.
    again = CaptionSampler(offsets, caption_text, changed, batch_size=2, seed=3)
    assert [b.pair_idx.tolist() for b in again.epoch(7)] == [b.pair_idx.tolist() for b in sampler.epoch(7)]


def test_sampler_masks_no_change_pairs_and_shared_captions() -> None:
    _, offsets, caption_text, changed = _caption_layout()
    sampler = CaptionSampler(offsets, caption_text, changed, batch_size=8)
    pair_idx = np.array([0, 1, 2, 4, 5])
    text_idx = np.array([0, 3, 4, 9, 9])  # pair 0 drew text 0, pair 1 drew text 3, ...
    mask = sampler.false_negatives(pair_idx, text_idx)
    assert (mask == mask.T).all() and not mask.diagonal().any()
    assert mask[3, 4]  # two no-change pairs are never each other's negatives
    assert not mask[0, 1]  # pair 0's captions do not include text 3, pair 1's do not include text 0
    # Now pair 1 draws text 2, which also describes pair 0: a false negative, masked both ways.
    mask = sampler.false_negatives(pair_idx, np.array([0, 2, 4, 9, 9]))
    assert mask[0, 1] and mask[1, 0]
    assert not mask[0, 2] and not mask[2, 3]  # real negatives stay


# ------------------------------------------------------------------------------ learning + resume


def _learnable_cache(n: int, image_dim: int, text_dim: int, n_tokens: int, seed: int) -> FeatureCache:
    """Random features with a learnable link: each change pair has a latent 'what changed' vector
    that moves its after-image features and (through another map) generates its 3 captions."""
    rng = np.random.default_rng(seed)
    maps = np.random.default_rng(123)  # the same "world" for train and val
    w_img, w_txt = maps.normal(size=(8, image_dim)), maps.normal(size=(8, text_dim))
    nochange_text = maps.normal(size=text_dim)
    changed = rng.random(n) > 0.2
    z = rng.normal(size=(n, 8)) * changed[:, None]
    before = rng.normal(size=(n, image_dim))
    after = before + z @ w_img + 0.1 * rng.normal(size=(n, image_dim))
    texts, feats, caption_text, offsets = [], [], [], [0]
    for i in range(n):
        if changed[i]:
            for j in range(3):
                caption_text.append(len(texts))
                texts.append(f"pair {i} caption {j}")
                feats.append(z[i] @ w_txt + 0.3 * rng.normal(size=text_dim))
        else:
            if "no change" not in texts:
                texts.append("no change")
                feats.append(nochange_text)
            caption_text.append(texts.index("no change"))
        offsets.append(len(caption_text))
    tokens = rng.normal(size=(n, n_tokens, image_dim)).astype(np.float16)
    return FeatureCache(
        pair_ids=[f"p{i}" for i in range(n)],
        texts=texts,
        caption_text=np.array(caption_text),
        caption_offsets=np.array(offsets),
        changed=changed.astype(np.int8),
        before_global=before,
        after_global=after,
        text_features=np.array(feats),
        before_tokens=tokens,
        after_tokens=tokens + (after - before)[:, None, :].astype(np.float16),
        change_type=["changed" if c else "none" for c in changed],
    )


@pytest.fixture(scope="module")
def tiny_model_config(tiny_hf_models):
    from textitsr.models.textitsr import ModelConfig

    def make(fusion: str) -> ModelConfig:
        return ModelConfig(
            image_encoder=str(tiny_hf_models.vit),
            text_encoder=str(tiny_hf_models.bert),
            fusion=fusion,
            embed_dim=32,
            fusion_width=32,
            fusion_layers=1,
            dropout=0.1,
        )

    return make


def _data(model) -> TrainData:
    d = model.dims()
    train = _learnable_cache(160, d["image_dim"], d["text_dim"], d["num_tokens"], seed=1)
    val = _learnable_cache(60, d["image_dim"], d["text_dim"], d["num_tokens"], seed=2)
    return TrainData(train, val, np.arange(train.n_pairs), np.arange(val.n_pairs), "val")


def _config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        root=tmp_path,
        out=tmp_path / "ckpt",
        epochs=8,
        batch_size=32,
        lr=2e-3,
        warmup_epochs=0.5,
        patience=20,
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_gff_training_learns_far_above_chance(tmp_path: Path, tiny_model_config) -> None:
    from textitsr.evaluation.evaluate import evaluate_cache
    from textitsr.models.checkpoint import load_checkpoint, read_checkpoint_config
    from textitsr.models.textitsr import TextITSR

    torch.manual_seed(0)
    model = TextITSR(tiny_model_config("gff:before+after+diff"))
    data = _data(model)
    before = evaluate_cache(model, data.val)["mR"]
    result = fit(model, data, _config(tmp_path), dataset={"kind": "random-learnable"})
    # Chance on a 60-pair gallery is ~9% mR; untrained heads are near it.
    assert before < 25
    assert result.best_val_mR > 60
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # The best checkpoint loads and reproduces the reported validation mR; the summary is stored.
    reloaded = load_checkpoint(result.checkpoint)
    assert evaluate_cache(reloaded, data.val)["mR"] == pytest.approx(result.best_val_mR, abs=1e-6)
    summary = read_checkpoint_config(result.checkpoint)["extra"]["training"]
    assert summary["best_epoch"] == result.best_epoch and summary["dataset"]["kind"] == "random-learnable"


@pytest.mark.slow
def test_tff_trains_on_cached_tokens(tmp_path: Path, tiny_model_config) -> None:
    from textitsr.models.textitsr import TextITSR

    torch.manual_seed(0)
    model = TextITSR(tiny_model_config("tff"))
    result = fit(model, _data(model), _config(tmp_path, epochs=2))
    assert result.epochs_run == 2 and np.isfinite(result.history[-1]["loss"])


@pytest.mark.slow
def test_resume_continues_from_the_saved_epoch(tmp_path: Path, tiny_model_config, monkeypatch) -> None:
    import textitsr.training.train as train_module
    from textitsr.models.textitsr import TextITSR

    def run(out: Path, resume: bool = False):
        torch.manual_seed(0)
        model = TextITSR(tiny_model_config("gff:after+diff"))
        return fit(model, _data(model), _config(tmp_path, out=out, epochs=4, resume=resume)), model

    full, full_model = run(tmp_path / "full")

    # Interrupt a second run during epoch 3's validation (after epoch 2's state was saved).
    calls = {"n": 0}
    real_eval = train_module.evaluate_cache

    def crashing_eval(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_cache", crashing_eval)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(train_module, "evaluate_cache", real_eval)
    assert load_training_state(tmp_path / "cut")["state"]["epoch"] == 2

    resumed, resumed_model = run(tmp_path / "cut", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    # Same batches, optimizer moments, schedule and dropout RNG: the same trajectory as no crash.
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)
    for k, v in full_model.trainable_state_dict().items():
        torch.testing.assert_close(resumed_model.trainable_state_dict()[k], v, rtol=1e-5, atol=1e-6)
    state = json.loads((tmp_path / "cut" / "last" / "state.json").read_text())
    assert state["state"]["epoch"] == 4


def _spy_on_checkpoint_saves(monkeypatch, out: Path, crash_after_save: int | None = None) -> list[dict]:
    """Record every save_checkpoint call of `fit` with the epoch of `last/` before and after it;
    optionally crash right after the n-th save (before `last/` is rewritten for that epoch)."""
    import textitsr.models.checkpoint as checkpoint_module

    saves: list[dict] = []
    real_save = checkpoint_module.save_checkpoint

    def last_epoch() -> int | None:
        return load_training_state(out)["state"]["epoch"] if (out / "last" / "state.json").is_file() else None

    def spying_save(model, folder, extra=None, **kwargs):
        before = last_epoch()
        real_save(model, folder, extra, **kwargs)
        saves.append({**extra["training"], "last_before": before, "last_after": last_epoch()})
        if len(saves) == crash_after_save:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", spying_save)
    return saves


@pytest.mark.slow
def test_interrupted_run_leaves_the_best_so_far_checkpoint(
    tmp_path: Path, tiny_model_config, monkeypatch
) -> None:
    """The best checkpoint is saved whenever val mR improves, each save keeps `last/`, and a run
    killed mid-way leaves a checkpoint that loads and is exactly the best model so far."""
    from safetensors.torch import load_file

    import textitsr.training.train as train_module
    from textitsr.evaluation.evaluate import evaluate_cache
    from textitsr.models.checkpoint import load_checkpoint, read_checkpoint_config
    from textitsr.models.textitsr import TextITSR

    out = tmp_path / "cut"
    saves = _spy_on_checkpoint_saves(monkeypatch, out)
    calls = {"n": 0}
    real_eval = train_module.evaluate_cache

    def crashing_eval(*args, **kwargs):  # killed during epoch 4's validation
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_cache", crashing_eval)
    torch.manual_seed(0)
    model = TextITSR(tiny_model_config("gff:after+diff"))
    data = _data(model)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, _config(tmp_path, out=out, epochs=6, lr=5e-3), dataset={"kind": "random-learnable"})

    state = load_training_state(out)["state"]
    assert state["epoch"] == 3
    # One save per new best (epoch 1 always is one), each right at the improving epoch.
    assert len(saves) >= 2, "the test needs a best save while last/ exists"
    assert [s["epochs"] for s in saves] == [s["best_epoch"] for s in saves]
    assert saves[0]["epochs"] == 1 and saves[-1]["best_epoch"] == state["best_epoch"]
    mrs = [s["best_val_mR"] for s in saves]
    assert mrs == sorted(mrs) and len(set(mrs)) == len(mrs)
    # Every save after epoch 1 found last/ from the epoch before and left it in place.
    assert (saves[0]["last_before"], saves[0]["last_after"]) == (None, None)
    assert all(s["last_before"] == s["last_after"] == s["epochs"] - 1 for s in saves[1:])

    # The interrupted run's checkpoint loads and is the best model so far, marked unfinished.
    reloaded = load_checkpoint(out)
    summary = read_checkpoint_config(out)["extra"]["training"]
    assert summary["finished"] is False and summary["best_epoch"] == state["best_epoch"]
    assert summary["dataset"] == {"kind": "random-learnable"}
    tensors = load_file(str(out / "last" / "state.safetensors"))
    for k, v in reloaded.trainable_state_dict().items():
        torch.testing.assert_close(v, tensors[f"best.{k}"], rtol=0, atol=0)
    assert evaluate_cache(reloaded, data.val)["mR"] == pytest.approx(state["best_mR"], abs=1e-6)


@pytest.mark.slow
def test_crash_right_after_a_best_save_resumes_and_finishes(
    tmp_path: Path, tiny_model_config, monkeypatch
) -> None:
    """Killed between epoch 2's checkpoint save and its `last/` rewrite: the checkpoint (epoch 2's
    best) is already usable, `last/` still holds epoch 1, and a resume reruns epoch 2 and finishes."""
    from textitsr.models.checkpoint import load_checkpoint, read_checkpoint_config
    from textitsr.models.textitsr import TextITSR

    out = tmp_path / "cut"

    def run(resume: bool):
        torch.manual_seed(0)
        model = TextITSR(tiny_model_config("gff:after+diff"))
        return fit(model, _data(model), _config(tmp_path, out=out, epochs=3, resume=resume))

    saves = _spy_on_checkpoint_saves(monkeypatch, out, crash_after_save=2)
    with pytest.raises(KeyboardInterrupt):
        run(resume=False)
    assert saves[-1]["epochs"] == 2 and load_training_state(out)["state"]["epoch"] == 1
    assert read_checkpoint_config(out)["extra"]["training"]["best_epoch"] == 2
    load_checkpoint(out)

    monkeypatch.undo()
    result = run(resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert load_training_state(out)["state"]["epoch"] == 3  # the final save kept last/
    summary = read_checkpoint_config(out)["extra"]["training"]
    assert summary["finished"] is True and summary["best_epoch"] == result.best_epoch
    load_checkpoint(out)


def test_concatenated_caches_keep_every_pair_with_its_captions() -> None:
    """Training on several sources: the union holds each pair's own features and caption features,
    a text shared by both caches is stored once, and tokens survive."""
    a = _learnable_cache(12, 8, 6, 4, seed=1)
    b = _learnable_cache(9, 8, 6, 4, seed=2)
    b.texts = [t if t == "no change" else f"other {t}" for t in b.texts]  # shared: "no change" only
    both = FeatureCache.concat([a, b])
    assert both.n_pairs == 21 and both.pair_ids == a.pair_ids + b.pair_ids
    assert both.texts.count("no change") == 1 and len(both.texts) == len(a.texts) + len(b.texts) - 1
    for cache, offset in ((a, 0), (b, 12)):
        for i in range(cache.n_pairs):
            j = offset + i
            assert both.captions(j) == cache.captions(i)
            assert np.array_equal(both.before_global[j], cache.before_global[i])
            assert np.array_equal(both.after_tokens[j], cache.after_tokens[i])
            lo, hi = cache.caption_offsets[i], cache.caption_offsets[i + 1]
            mine = both.caption_text[both.caption_offsets[j] : both.caption_offsets[j + 1]]
            theirs = cache.text_features_all[cache.caption_text[lo:hi]]
            assert np.array_equal(both.text_features_all[mine], theirs)
    assert both.change_type == a.change_type + b.change_type
    no_tokens = FeatureCache(**{**_fields(b), "before_tokens": None, "after_tokens": None})
    globals_only = FeatureCache.concat([a, no_tokens])
    assert not globals_only.with_tokens
    with pytest.raises(ValueError, match="widths"):
        FeatureCache.concat([a, _learnable_cache(5, 10, 6, 4, seed=3)])


def _fields(c: FeatureCache) -> dict:
    return dict(
        pair_ids=c.pair_ids, texts=c.texts, caption_text=c.caption_text, caption_offsets=c.caption_offsets,
        changed=c.changed, before_global=c.before_global, after_global=c.after_global,
        text_features=c.text_features_all, before_tokens=c.before_tokens, after_tokens=c.after_tokens,
        change_type=c.change_type,
    )
