"""The leave-source-out protocol: sources, folds, the real-pair mix and the change-type loss."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from tests.test_realdev import _load_real_benchmark
from textitsr.embedding.cache import FeatureCache
from textitsr.errors import InputError
from textitsr.evaluation.leave_source_out import (
    derive_change_pairs,
    generated_source,
    group_folds,
    read_sources,
    source_of,
)
from textitsr.evaluation.realdev import LabelledFolderSource
from textitsr.training.real_mix import MixedData, TypePrototypeLoss, known_types
from textitsr.training.sampling import Batch


def test_folds_never_split_a_source_and_balance_pair_counts() -> None:
    sources = ["LEVIR-CD"] * 54 + ["Joplin"] * 16 + ["Harvey"] * 14 + ["IdaBD"] * 11 + ["Fuego"] * 5
    sources += [f"pool-{i}" for i in range(12) for _ in range(3 + i)]
    folds = group_folds(sources, 4)
    assert len(folds) == 4
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(set(sources)) and len(flat) == len(set(flat))  # each source once
    counts = Counter(sources)
    sizes = sorted(sum(counts[s] for s in f) for f in folds)
    assert sum(sizes) == len(sources) and sizes[-1] - sizes[0] <= 8  # 202 pairs: 48..54
    assert group_folds(list(reversed(sources)), 4) == folds  # order of the pairs does not matter
    # Fewer sources than folds: one fold per source; one source cannot be held out against itself.
    assert group_folds(["a", "a", "b"], 4) == [("a",), ("b",)]
    with pytest.raises(InputError, match="at least 2 sources"):
        group_folds(["a", "a"], 4)


def test_source_comes_from_source_or_dataset() -> None:
    assert source_of({"source": "egy-bcd", "dataset": "EGY-BCD (samples)"}) == "egy-bcd"
    assert source_of({"dataset": "LEVIR-CD (test split)"}) == "LEVIR-CD"
    assert source_of({"dataset": "xBD (hurricane-harvey, 2017)"}) == "xBD hurricane-harvey"
    assert source_of({"dataset": "IdaBD (Hurricane Ida 2021, Louisiana)"}) == "IdaBD"
    assert source_of({"dataset": "SECOND (Wuhan)"}) == "SECOND (Wuhan)"
    with pytest.raises(InputError, match="no 'source' or 'dataset'"):
        source_of({"name": "x"})
    assert generated_source("levircd_sample_test_2_0000_0000") == "LEVIR-CD"
    assert generated_source("xbd_guatemala_06_pre_x0_y0") == "xBD guatemala-volcano"
    assert generated_source("landsat_1985_2000_r0_c1") == "landsat-pucallpa"
    assert generated_source("m_4709963_se_14_1_20090818_20120731_r0_c0") == "naip-northdakota"
    assert generated_source("loveda_rural0_x0_y0") is None


def test_realdev_pairs_group_into_five_sources() -> None:
    realdev = shared_path("realdev")
    sources = read_sources(realdev)
    assert len(sources) == 63
    assert Counter(sources.values()) == {
        "LEVIR-CD": 24,
        "Joplin tornado": 16,
        "xBD hurricane-harvey": 14,
        "xBD guatemala-volcano": 5,
        "IdaBD": 4,
    }


def test_derived_change_pairs_are_captioned_labelled_and_not_realdev(tmp_path: Path) -> None:
    shared = shared_path()
    out = derive_change_pairs(shared, tmp_path / "pool", against=[shared / "realdev"])
    source = LabelledFolderSource(out)
    sources = read_sources(out)
    assert set(sources.values()) == {"LEVIR-CD", "IdaBD"} and len(source) == len(sources) >= 30
    pairs = list(source.pairs())
    assert all(p.captions for p in pairs)
    kinds = Counter(p.change_type for p in pairs)
    assert kinds["none"] > 0 and kinds["buildings_built"] > 0 and kinds["buildings_demolished"] > 0
    realdev_names = {p.stem for p in (shared / "realdev" / "before").glob("*.png")}
    assert not realdev_names & set(sources)
    # Reused, not rewritten, on the next call.
    stamp = (out / "pairs.jsonl").stat().st_mtime_ns
    assert derive_change_pairs(shared, out) == out and (out / "pairs.jsonl").stat().st_mtime_ns == stamp


def test_pool_folder_captions_may_live_in_pairs_jsonl(tmp_path: Path) -> None:
    for side in ("before", "after"):
        (tmp_path / side).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / side / f"p{i}.png")
    rows = [
        {"name": "p0", "source": "s", "change_types": ["road_built"], "captions": ["a road is laid"]},
        {"name": "p1", "source": "s", "change_types": ["none"]},
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = {p.pair_id: p for p in LabelledFolderSource(tmp_path).pairs()}
    assert list(pairs["labelled-folder_p0"].captions) == ["a road is laid"]
    assert not pairs["labelled-folder_p1"].captions
    rows[0]["captions"] = [""]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match='pairs.jsonl:1: "captions" must be a list'):
        LabelledFolderSource(tmp_path)


def _cache(types: list[str], prefix: str, dim: int = 6) -> FeatureCache:
    n = len(types)
    rng = np.random.default_rng(len(prefix))
    return FeatureCache(
        pair_ids=[f"{prefix}{i}" for i in range(n)],
        texts=[f"{prefix} caption {i}" for i in range(n)],
        caption_text=np.arange(n),
        caption_offsets=np.arange(n + 1),
        changed=np.array([t != "none" for t in types], np.int8),
        before_global=rng.normal(size=(n, dim)),
        after_global=rng.normal(size=(n, dim)),
        text_features=rng.normal(size=(n, 4)),
        change_type=types,
    )


def test_fold_drops_held_out_sources_from_generated_and_real_pairs() -> None:
    train = _cache(["buildings_built", "none", "road_laid", "none"], "g")
    val = _cache(["none", "buildings_built"], "v")
    pool = _cache(["buildings_built", "none", "water_expanded"], "r")
    mixed = MixedData(
        train,
        ["LEVIR-CD", None, None, "IdaBD"],
        val,
        [None, "LEVIR-CD"],
        pool,
        ["LEVIR-CD", "Joplin", "IdaBD"],
    )
    data, labels = mixed.fold({"LEVIR-CD"}, real_weight=3)
    # Generated pair 0 (made from LEVIR-CD) and real pair 0 (LEVIR-CD) are out; Joplin and IdaBD
    # real pairs (cache rows 5 and 6) come 3 times each.
    assert sorted(data.train_idx.tolist()) == [1, 2, 3] + [5] * 3 + [6] * 3
    assert data.val_idx.tolist() == [0]
    assert labels[6] == "water_expanded" and data.train.pair_ids[6] == "r2"
    no_real, _ = mixed.fold({"IdaBD"}, real_weight=0)
    assert no_real.train_idx.tolist() == [0, 1, 2]


def test_type_labels_map_generated_names_and_refuse_unknown() -> None:
    assert known_types("vegetation_cleared_for_buildings") == ("buildings_built", "vegetation_cleared")
    assert known_types("buildings_demolished+vegetation_cleared") == (
        "buildings_demolished",
        "vegetation_cleared",
    )
    assert known_types("road_laid") == ("road_built",)
    assert known_types("other") == () and known_types("buildings_demolished+other") == ()
    assert known_types(None) == ()


def test_type_prototype_loss_pulls_pairs_to_their_type(tiny_hf_models) -> None:
    """On a tiny real model: the loss ignores unlabelled pairs, and a few steps on it raise the
    similarity of each pair to its own type's prototype above the others'."""
    from textitsr.models.textitsr import ModelConfig, TextITSR

    torch.manual_seed(0)
    model = TextITSR(
        ModelConfig(
            image_encoder=str(tiny_hf_models.vit),
            text_encoder=str(tiny_hf_models.bert),
            fusion="gff:before+after+diff",
            embed_dim=32,
            fusion_width=32,
            fusion_layers=1,
        )
    )
    dims = model.dims()
    labels = ["buildings_built", "none", "water_expanded", "other"] * 8
    rng = np.random.default_rng(0)
    code = {t: rng.normal(size=dims["image_dim"]) for t in set(labels)}
    before = rng.normal(size=(len(labels), dims["image_dim"])).astype(np.float32)
    after = before + np.stack([code[t] for t in labels]).astype(np.float32)
    loss_fn = TypePrototypeLoss(model, labels, weight=1.0)
    batch = Batch(np.arange(len(labels)), np.zeros(len(labels), np.int64), np.zeros((32, 32), bool))
    from textitsr.models.textitsr import PairFeatures

    feats = PairFeatures(torch.from_numpy(before), torch.from_numpy(after))
    only_other = Batch(np.array([3, 7]), np.zeros(2, np.int64), np.zeros((2, 2), bool))
    assert float(loss_fn(model, only_other, model.embed_pair_features(feats)[[3, 7]]).detach()) == 0.0
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):
        loss = loss_fn(model, batch, model.embed_pair_features(feats))
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first
    with torch.no_grad():
        sim = model.embed_pair_features(feats) @ loss_fn.prototypes(model).t()
    picked = sim.argmax(1).numpy()
    for i, label in enumerate(labels):
        if label != "other":
            assert loss_fn.types[picked[i]] == label


def test_lso_tables_from_stored_runs() -> None:
    """The markdown of the protocol: per-variant means over folds, per fold, per type, per source."""
    real = _load_real_benchmark()
    chance = {k: 9.0 for k in real.RETRIEVAL} | {"ap:change": 0.5, "ap:buildings_built": 0.3, "lift": 0.0}
    pixel = {"ap:change": 0.6, "ap:buildings_built": 0.4, "lift": 0.05}
    info = [
        {
            "sources": [s],
            "n": 60,
            "types": ["buildings_built"],
            "counts": {},
            "chance": chance,
            "pixel": pixel,
        }
        for s in ("A", "B")
    ]
    runs = []
    for v, base in (("base", 20.0), ("real", 30.0)):
        for k, s in enumerate("AB"):
            for seed in (0, 1):
                row = {key: base + k + seed for key in real.RETRIEVAL} | {
                    "lift": 0.1,
                    "ap:change": 0.7,
                    "ap:buildings_built": 0.5,
                }
                src = {s: {"n": 60, "model": row, "chance": chance, "pixel": pixel}}
                runs.append({"variant": v, "fold": k, "seed": seed, "row": row, "sources": src})
    text = real.lso_markdown({"runs": runs, "fold_info": info, "n_pairs": 120})
    # base, seed 0: folds 20 and 21 -> 20.5; seed 1: 21 and 22 -> 21.5; over seeds 21.0 ± 0.7.
    assert "| base | 2 | 21.0 ± 0.7 |" in text and "| real | 2 | 31.0 ± 0.7 |" in text
    assert "| buildings_built | 2 | 0.50 ± 0.00 | 0.50 ± 0.00 | 0.40 | 0.30 |" in text
    assert (
        "| A | 60 | base | 20.5 ± 0.7 | 9.0 | 0.70 ± 0.00 | 0.60 | 0.50 | 0.50 ± 0.00 | 0.40 | 0.30 |" in text
    )


def test_recipe_records_real_pairs_only_when_used() -> None:
    """A recipe without real pairs, the type loss or probes keeps the fingerprint it had before they
    existed."""
    from dataclasses import replace

    from textitsr.training.default_model import DefaultRecipe

    plain = replace(
        DefaultRecipe(), real_weight=0, real_pools=(), type_loss=0.0, type_weight=0.0, caption_weight=0.0
    )
    added = {"real_weight", "real_pools", "type_loss", "type_weight", "caption_weight", "type_c"}
    added.add("caption_alpha")
    assert not added & set(plain.to_dict()) and not plain.mixed
    probed = replace(plain, caption_weight=0.5)
    assert probed.mixed and {"caption_weight", "caption_alpha"} <= set(probed.to_dict())
    assert "type_c" not in probed.to_dict()
    mixed = replace(plain, real_weight=5, real_pools=("realdev",))
    assert mixed.mixed and mixed.to_dict()["real_pools"] == ["realdev"]
    assert mixed.fingerprint() != plain.fingerprint()
