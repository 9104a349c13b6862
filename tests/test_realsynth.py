"""Change synthesis on real tiles, its captions, and the make-training-data command.

A tiny fixture (textured ground, square buildings, a tree blob, a pond, a road; LoveDA class ids)
stands in for ../shared/data/realtrain; the tests on the real tiles skip when ../shared is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from textitsr.data.levircc import LevirCCSource
from textitsr.synth.caption_bank import CaptionBank, caption_count, caption_tags, place_of
from textitsr.synth.realsynth import (
    OPERATIONS,
    SCHEME_LAYERS,
    RealTile,
    changed_region,
    paste_buildings,
    read_tiles,
)
from textitsr.synth.storm_roads import MORE_OPERATIONS
from textitsr.synth.training_data import TrainingDataRecipe, make_training_data

SIZE = 96


def _fixture_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A LoveDA-like tile: 1 ground, 2 buildings, 3 road, 4 water, 6 forest."""
    rng = np.random.default_rng(seed)
    img = (np.array([150, 130, 100]) + rng.normal(0, 12, (SIZE, SIZE, 3))).clip(0, 255)
    mask = np.ones((SIZE, SIZE), np.uint8)
    for y, x in ((10, 10), (10, 30), (30, 12)):
        mask[y : y + 10, x : x + 10] = 2
        img[y : y + 10, x : x + 10] = (210, 90, 80)
    mask[:, 50:56] = 3
    img[:, 50:56] = 120
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pond = (yy - 75) ** 2 + (xx - 20) ** 2 < 12**2
    mask[pond] = 4
    img[pond] = (40, 60, 90)
    trees = (yy - 70) ** 2 + (xx - 78) ** 2 < 16**2
    mask[trees] = 6
    img[trees] = (40, 90, 40) + rng.normal(0, 10, (int(trees.sum()), 3))
    return img.astype(np.uint8), mask


def fixture_tile(seed: int = 0) -> RealTile:
    img, mask = _fixture_arrays(seed)
    layers = {k: np.isin(mask, ids) for k, ids in SCHEME_LAYERS["loveda"].items()}
    return RealTile("fixture", img, layers, mask > 0)


CAPTIONS = {
    "none": ["there is no difference", "the scene is the same as before"],
    "built": [
        "two houses are built in the top left",
        "a new building appears",
        "many villas are constructed",
    ],
    "gone": ["a house is demolished", "some buildings disappear"],
    "road": ["a road is built on the bareland"],
    "trees": ["some trees are removed", "the forest is cleared"],
}


def write_fixture_shared(root: Path) -> Path:
    """A miniature ../shared/data: realtrain tiles + one LEVIR-CD-like pair + LEVIR-CC captions."""
    rt = root / "realtrain"
    for sub in ("images", "masks", "pairs/before", "pairs/after", "pairs/masks"):
        (rt / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(3):
        img, mask = _fixture_arrays(i)
        Image.fromarray(img).save(rt / "images" / f"tile{i}.png")
        Image.fromarray(mask).save(rt / "masks" / f"tile{i}.png")
        lines.append(json.dumps({"name": f"tile{i}", "class_scheme": "loveda", "false_colour": False}))
    (rt / "tiles.jsonl").write_text("\n".join(lines) + "\n")
    before, _ = _fixture_arrays(5)
    after = before.copy()
    after[60:70, 60:70] = 220
    change = np.zeros((SIZE, SIZE), np.uint8)
    change[60:70, 60:70] = 1
    Image.fromarray(before).save(rt / "pairs/before/lcd.png")
    Image.fromarray(after).save(rt / "pairs/after/lcd.png")
    Image.fromarray(change).save(rt / "pairs/masks/lcd.png")
    (rt / "pairs/pairs.jsonl").write_text(json.dumps({"name": "lcd", "mask_scheme": "binary_change"}) + "\n")
    images = [
        {
            "filename": f"{k}{i}.png",
            "filepath": "train",
            "changeflag": int(k != "none"),
            "sentences": [{"raw": c, "tokens": c.split()}],
        }
        for k, caps in CAPTIONS.items()
        for i, c in enumerate(caps)
    ]
    (root / "levircc-captions.json").write_text(json.dumps({"images": images}))
    return root


# ------------------------------------------------------------------------------------ synthesis
@pytest.mark.parametrize("kind", [k for k in OPERATIONS if k != "none"])
def test_operations_change_only_inside_the_dilated_mask(kind: str) -> None:
    tile = fixture_tile()
    for seed in range(6):
        change = OPERATIONS[kind](tile, np.random.default_rng(seed))
        if change is not None:
            break
    assert change is not None, f"{kind} never applied to a tile that has every layer"
    assert change.change_type == kind
    differs = np.abs(change.before.astype(int) - change.after.astype(int)).max(axis=2) > 0
    assert differs.any() and change.mask.any()
    assert not (differs & ~changed_region(change.mask)).any()
    # one of the two dates is the real tile itself
    assert np.array_equal(change.before, tile.image) or np.array_equal(change.after, tile.image)


def test_buildings_built_removes_whole_buildings_and_counts_them() -> None:
    tile = fixture_tile()
    change = OPERATIONS["buildings_built"](tile, np.random.default_rng(3))
    assert change is not None and 1 <= change.count <= 3
    buildings = tile.layer("building")
    assert (change.mask & buildings).sum() == change.count * 100  # each 10x10 building taken whole
    # the building pixels in "before" now look like the ground, not the red roofs
    removed = change.mask & buildings
    assert change.before[removed][:, 0].mean() < 185 < change.after[removed][:, 0].mean()


def test_pasted_buildings_land_on_open_ground() -> None:
    tile, donor = fixture_tile(0), fixture_tile(1)
    change = paste_buildings(tile, donor, np.random.default_rng(0))
    assert change is not None and change.change_type == "buildings_built"
    assert not (change.mask & (tile.layer("water") | tile.layer("building") | tile.layer("road"))).any()


def test_synthesis_is_deterministic_by_seed() -> None:
    tile = fixture_tile()
    a = OPERATIONS["water_expanded"](tile, np.random.default_rng(11))
    b = OPERATIONS["water_expanded"](tile, np.random.default_rng(11))
    assert a is not None and b is not None
    assert np.array_equal(a.before, b.before) and np.array_equal(a.after, b.after)


# ------------------------------------------------------------------------------------- captions
@pytest.mark.parametrize(
    ("caption", "tags"),
    [
        ("two houses are built in the top left", {"building_new"}),
        ("a road and some trees disappear", {"road_gone", "vegetation_gone"}),
        (
            "the vegetation has been replaced by a road and many villas around",
            {"vegetation_gone", "road_new", "building_new"},
        ),
        ("a building is built on the grass", {"building_new"}),
        ("the lake is dried up", {"water_gone"}),
        ("many trees grow by the lake", {"vegetation_new"}),
        ("there is no difference", set()),
    ],
)
def test_caption_tags(caption: str, tags: set[str]) -> None:
    assert caption_tags(caption) == tags


def test_place_and_count_words() -> None:
    mask = np.zeros((100, 100), bool)
    mask[5:20, 5:25] = True
    assert place_of(mask) == "in the top left"
    mask[:] = False
    mask[80:95, 45:55] = True
    assert place_of(mask) == "at the bottom"
    assert place_of(np.ones((100, 100), bool)) is None
    assert caption_count("two new villas appear") == 2
    assert caption_count("a house is built") == 1
    assert caption_count("new villas appear") == 0


def test_bank_draws_captions_of_the_change_type(tmp_path: Path) -> None:
    bank = CaptionBank.from_levircc(write_fixture_shared(tmp_path) / "levircc-captions.json")
    assert set(bank.by_type["buildings_built"]) == set(CAPTIONS["built"])
    assert set(bank.by_type["buildings_demolished"]) == set(CAPTIONS["gone"])
    rng = np.random.default_rng(0)
    caps = bank.draw("buildings_built", 2, "in the top left", rng)
    assert len(caps) == 5 and len(set(caps)) == 5
    # a real caption naming one building or another place never describes two houses top left
    assert "a new building appears" not in caps
    assert "two houses are built in the top left" in caps
    assert all("house" in c or "villa" in c or "building" in c for c in caps)
    for kind, words in (
        ("vegetation_cleared", ("tree", "forest", "vegetation", "wood")),
        ("water_expanded", ("water", "lake", "pond", "flood")),
    ):
        assert all(any(w in c for w in words) for c in bank.draw(kind, None, None, rng))


# ------------------------------------------------------------------------------- the command
def test_make_training_data_writes_a_levircc_source(tmp_path: Path) -> None:
    shared = write_fixture_shared(tmp_path / "shared")
    recipe = TrainingDataRecipe(
        synth_targets={"buildings_built": 4, "vegetation_cleared": 3, "none": 3}, real_pair_copies=2
    )
    out = tmp_path / "out"
    log: list[str] = []
    manifest = make_training_data(shared, out, recipe, parts=("synth", "realpairs"), echo=log.append)
    assert manifest["per_type"] == {"buildings_built": 6, "none": 3, "vegetation_cleared": 3}
    source = LevirCCSource(out)
    pairs = list(source.pairs())
    assert len(pairs) == 12
    assert all(len(p.captions) >= 5 for p in pairs)
    assert {p.changed for p in pairs if "none_" in p.pair_id} == {False}
    doc = json.loads((out / "LevirCCcaptions.json").read_text())
    assert {r["part"] for r in doc["images"]} == {"synth", "realpairs"}

    # resumable: a second run keeps both parts; deterministic: a fresh run writes the same bytes
    again = make_training_data(shared, out, recipe, parts=("synth", "realpairs"), echo=log.append)
    assert again["content_sha256"] == manifest["content_sha256"]
    assert sum("generating" in line for line in log) == 2
    fresh = make_training_data(
        shared, tmp_path / "fresh", recipe, parts=("synth", "realpairs"), echo=log.append
    )
    assert fresh["content_sha256"] == manifest["content_sha256"]
    # the bytes are the same on the same numpy SIMD level, which the manifest records
    from textitsr.synth.training_data import numpy_simd_level

    assert fresh["numpy_simd"] == manifest["numpy_simd"] == numpy_simd_level() != "unknown"
    other = make_training_data(
        shared,
        tmp_path / "other",
        TrainingDataRecipe(**{**recipe.__dict__, "seed": 1}),
        parts=("synth",),
        echo=log.append,
    )
    assert other["content_sha256"] != manifest["content_sha256"]


def test_make_training_data_refuses_a_foreign_folder(tmp_path: Path) -> None:
    from textitsr.errors import InputError

    shared = write_fixture_shared(tmp_path / "shared")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="did not write .*make-training-data folder"):
        make_training_data(shared, foreign, TrainingDataRecipe(synth_targets={"none": 1}), parts=("synth",))
    assert (foreign / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- on the real tiles
def test_real_tiles_synthesis_changes_only_the_mask() -> None:
    tiles = read_tiles(shared_path("realtrain"))
    assert len(tiles) == 144
    rng = np.random.default_rng(0)
    made = set()
    for tile in tiles[::6]:
        for kind in (
            "buildings_built",
            "buildings_demolished",
            "road_built",
            "vegetation_cleared",
            "water_expanded",
        ):
            change = OPERATIONS[kind](tile, rng)
            if change is None:
                continue
            made.add(kind)
            differs = np.abs(change.before.astype(int) - change.after.astype(int)).max(axis=2) > 0
            assert not (differs & ~changed_region(change.mask)).any(), (tile.name, kind)
    assert {"buildings_built", "road_built", "vegetation_cleared"} <= made


@pytest.mark.parametrize("name", sorted(MORE_OPERATIONS))
def test_storm_damage_and_laid_roads_change_only_their_mask(name: str) -> None:
    tile = fixture_tile()
    change = next(
        (c for seed in range(12) if (c := MORE_OPERATIONS[name](tile, np.random.default_rng(seed)))), None
    )
    assert change is not None, f"{name} never applied to a tile that has every layer"
    assert change.change_type in {"vegetation_cleared", "road_built"}  # captioned as existing types
    assert np.array_equal(change.before, tile.image)
    differs = np.abs(change.before.astype(int) - change.after.astype(int)).max(axis=2) > 0
    assert differs.any() and not (differs & ~changed_region(change.mask)).any()
    inside_before = change.before[change.mask].astype(float)
    inside_after = change.after[change.mask].astype(float)
    if name == "vegetation_storm_damage":
        assert (change.mask <= tile.layer("tree")).all()
        # green canopy turns to brown-grey debris: less green than red, brighter
        greenness = [(x[:, 1] - x[:, 0]).mean() for x in (inside_before, inside_after)]
        assert greenness[1] < greenness[0]
        assert inside_after.mean() > inside_before.mean()
    else:
        assert not (change.mask & (tile.layer("building") | tile.layer("water"))).any()
        assert inside_after.std(axis=1).mean() < inside_before.std(axis=1).mean() + 5  # a grey-ish strip
