"""Synthetic demo world: deterministic, disjoint splits, grounded captions, GeoTIFFs, LEVIR-CC copy."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from typer.testing import CliRunner

from textitsr.cli import app
from textitsr.data.pairs import SPLITS, BitemporalPair, PairSource
from textitsr.data.world import CHANGE_TYPES, SyntheticSource
from textitsr.errors import InputError
from textitsr.synth import landcover as lc
from textitsr.synth.world import SyntheticWorldConfig, _type_schedule, write_demo_world
from textitsr.synth.world_captions import NO_CHANGE_SENTENCES, captions_for, place_of_mask

SMALL = SyntheticWorldConfig(n_train=36, n_val=12, n_test=18)

HOUSE = ("house", "building", "villa")
TREE = ("tree", "woods", "forest", "vegetation", "woodland")
#: Words a caption of each change type must use to name what changed: one of each group (combined
#: events name both of their parts in every sentence).
OBJECT_WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "buildings_built": (HOUSE,),
    "buildings_demolished": (HOUSE,),
    "road_built": (("road",),),
    "road_extended": (("road",),),
    "vegetation_cleared": (TREE,),
    "vegetation_grown": (("tree", "grass", "vegetation", "plants", "green", "forest", "meadow"),),
    "water_expanded": (("water", "pond", "lake"),),
    "water_receded": (("water", "pond", "lake"),),
    "road_and_buildings_built": (("road",), HOUSE),
    "vegetation_cleared_for_buildings": (TREE, HOUSE),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    start = time.perf_counter()
    root = write_demo_world(tmp_path_factory.mktemp("syn") / "world", seed=11, config=SMALL)
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def source(world: tuple[Path, float]) -> SyntheticSource:
    return SyntheticSource(world[0])


@pytest.fixture(scope="module")
def pairs(source: SyntheticSource) -> list[BitemporalPair]:
    return list(source.pairs())


def _mask(pair: BitemporalPair) -> np.ndarray:
    with rasterio.open(pair.location["change_mask"]) as ds:
        return ds.read(1, window=Window(*pair.location["window"])) > 0


def _ndi(pair: BitemporalPair, when: str, a: str, b: str) -> np.ndarray:
    x, y = pair.band(when, a), pair.band(when, b)
    return (x - y) / (x + y + 1e-6)


def test_small_world_generates_fast_and_counts_per_split(world, source, pairs) -> None:
    root, seconds = world
    assert seconds < 20, f"66-pair world took {seconds:.1f} s"
    assert isinstance(source, PairSource) and source.name == "synthetic"
    assert len(source) == len(pairs) == 66
    assert Counter(p.split for p in pairs) == {"train": 36, "val": 12, "test": 18}
    assert [p.pair_id for p in source.pairs("val")] == [f"val_{i:06d}" for i in range(1, 13)]


def test_same_seed_same_world_other_seed_other_world(tmp_path: Path, world) -> None:
    cfg = SyntheticWorldConfig(n_train=9, n_val=9, n_test=9, tile_size=64, export_levircc=False)
    a = write_demo_world(tmp_path / "a", seed=5, config=cfg)
    b = write_demo_world(tmp_path / "b", seed=5, config=cfg)
    c = write_demo_world(tmp_path / "c", seed=6, config=cfg)
    assert (a / "world.json").read_bytes() == (b / "world.json").read_bytes()
    ra, rc = SyntheticSource(a).records(), SyntheticSource(c).records()
    assert [r["captions"] for r in ra] != [r["captions"] for r in rc]
    with rasterio.open(a / "scenes/test/after.tif") as da, rasterio.open(b / "scenes/test/after.tif") as db:
        assert np.array_equal(da.read(), db.read())
    with rasterio.open(c / "scenes/test/after.tif") as dc:
        assert dc.bounds != da.bounds  # the seed also moves the place


def test_splits_are_disjoint_worlds(source, pairs) -> None:
    ids = [p.pair_id for p in pairs]
    assert len(set(ids)) == len(ids)
    boxes = {s: source.scenes[s]["bounds"] for s in SPLITS}
    for i, s in enumerate(SPLITS):
        for t in SPLITS[i + 1:]:
            (w1, s1, e1, n1), (w2, s2, e2, n2) = boxes[s], boxes[t]
            assert e1 < w2 or e2 < w1 or n1 < s2 or n2 < s1, f"{s} and {t} scenes overlap"
    assert len({source.scenes[s]["place"] for s in SPLITS}) == 3


def test_every_split_covers_every_change_type(pairs) -> None:
    assert set(OBJECT_WORDS) == set(CHANGE_TYPES) - {"none"}
    for split in SPLITS:
        kinds = Counter(p.change_type for p in pairs if p.split == split)
        assert set(kinds) == set(CHANGE_TYPES), split
        assert kinds["none"] >= max(v for k, v in kinds.items() if k != "none")
    assert all(p.changed == (p.change_type != "none") for p in pairs)
    default = SyntheticWorldConfig()
    schedule = _type_schedule(default.n_train, default.none_weight, np.random.default_rng(0))
    assert schedule.count("none") == default.n_train // 5  # 20% of tiles stay unchanged


def test_captions_are_five_varied_and_grounded(source, pairs) -> None:
    facts = {r["pair_id"]: r["facts"] for r in source.records()}
    for p in pairs:
        assert len(p.captions) == 5 and len(set(p.captions)) == 5, p.pair_id
        if p.change_type == "none":
            assert set(p.captions) <= set(NO_CHANGE_SENTENCES)
            continue
        assert not set(p.captions) & set(NO_CHANGE_SENTENCES)
        for cap in p.captions:
            for words in OBJECT_WORDS[p.change_type]:
                assert any(w in cap for w in words), (p.change_type, cap)
        place = facts[p.pair_id]["place"]
        corner = place in ("top_left", "top_right", "bottom_left", "bottom_right")
        if corner and p.change_type != "road_extended":
            horizontal = place.split("_")[1]
            assert any(horizontal in c for c in p.captions), (place, p.captions)
        if "count" in facts[p.pair_id]:  # every event with houses
            n = facts[p.pair_id]["count"]
            assert n >= 1, p.pair_id
            if n == 1:
                assert not any(w in " ".join(p.captions) for w in ("houses", "buildings", "villas"))
            else:
                assert all(any(w in c for w in ("houses", "buildings", "villas")) for c in p.captions)


def test_caption_grammar_and_places() -> None:
    mask = np.zeros((64, 64), dtype=bool)
    mask[5:20, 4:25] = True
    assert place_of_mask(mask) == "top_left"
    mask[:] = False
    mask[50:58, :] = True  # a road along the bottom
    assert place_of_mask(mask) == "bottom"
    assert place_of_mask(np.ones((64, 64), dtype=bool)) == "whole"
    facts = {"type": "road_built", "orientation": "curved", "width": 9.5, "material": "asphalt",
             "cover": "trees", "place": "whole"}
    seen = set()
    for seed in range(40):
        caps = captions_for(facts, np.random.default_rng(seed))
        assert caps == captions_for(facts, np.random.default_rng(seed))
        assert not [c for c in caps if re.search(r"\ba [aeiou]", c) or "all over" in c], caps
        seen.update(caps)
    assert len(seen) > 20  # phrasing varies from tile to tile


def test_geotiffs_are_georeferenced_and_tiles_lie_inside(world, source, pairs) -> None:
    root = world[0]
    for split in SPLITS:
        scene = source.scenes[split]
        with rasterio.open(root / scene["files"]["before"]) as ds, \
                rasterio.open(root / scene["files"]["after"]) as da:
            assert ds.crs.to_string() == "EPSG:32614" and ds.count == 4 and ds.dtypes[0] == "uint8"
            assert ds.descriptions == ("red", "green", "blue", "nir")
            assert ColorInterp.alpha not in ds.colorinterp  # nir must not read as transparency
            assert abs(ds.res[0] - 1.0) < 1e-9
            assert ds.tags()["ACQUISITION_DATE"] == scene["dates"][0] < da.tags()["ACQUISITION_DATE"]
            west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
            assert 29 < south < north < 31.5 and -99 < west < east < -97  # central Texas
            for p in (q for q in pairs if q.split == split):
                w, s, e, n = p.bounds
                assert west <= w < e <= east and south <= s < n <= north, p.pair_id
                win = Window(*p.location["window"])
                assert np.allclose(p.native_bounds, rasterio.windows.bounds(win, ds.transform))
                assert p.crs == "EPSG:32614" and p.dates == tuple(scene["dates"])
                assert p.bands == ("red", "green", "blue", "nir") and p.source == "synthetic"
                json.dumps(p.location)


def test_pixel_change_is_where_the_event_is(pairs) -> None:
    none_diff = [np.abs(p.after - p.before).mean() for p in pairs if p.change_type == "none"]
    assert 0 < max(none_diff) < 0.03  # dates differ a little (radiometry, noise), never identical
    for p in pairs:
        if p.change_type == "none":
            continue
        mask = _mask(p)
        assert mask.any(), p.pair_id
        diff = np.abs(p.after - p.before).mean(axis=2)
        assert diff[mask].mean() > 3 * diff[~mask].mean(), (p.pair_id, p.change_type)
        assert diff[mask].mean() > 2 * max(none_diff)
        if p.change_type in ("vegetation_cleared", "vegetation_cleared_for_buildings"):
            assert (_ndi(p, "before", "nir", "red") - _ndi(p, "after", "nir", "red"))[mask].mean() > 0.3
        if p.change_type == "vegetation_grown":
            assert (_ndi(p, "after", "nir", "red") - _ndi(p, "before", "nir", "red"))[mask].mean() > 0.2
        ndwi_rise = (_ndi(p, "after", "green", "nir") - _ndi(p, "before", "green", "nir"))[mask].mean()
        if p.change_type == "water_expanded":  # NDWI (green - nir) rises where water arrives
            assert ndwi_rise > 0.4
        if p.change_type == "water_receded":
            assert ndwi_rise < -0.4


def test_combined_events_draw_both_parts_where_the_mask_is() -> None:
    roofs = [lab for pair in lc.ROOFS for lab in pair]
    for seed in range(12):
        tile = lc.make_tile(np.random.default_rng(seed), "road_and_buildings_built", 128)
        new = tile.after[tile.mask]
        assert np.isin(new, (lc.CONCRETE, lc.ASPHALT)).sum() > 300, seed  # a road crossing the tile
        assert np.isin(new, roofs).any() and tile.facts["count"] >= 1
        assert not np.isin(tile.before[tile.mask], roofs + [lc.CONCRETE, lc.ASPHALT]).any()
        tile = lc.make_tile(np.random.default_rng(seed), "vegetation_cleared_for_buildings", 128)
        assert np.isin(tile.after[tile.mask], roofs).sum() >= 81 * tile.facts["count"] >= 81
        assert (tile.before[tile.mask] == lc.TREES).mean() > 0.8  # the houses stand where trees were


def test_tiny_tiles_still_have_objects_and_captions(tmp_path: Path) -> None:
    cfg = SyntheticWorldConfig(n_train=44, n_val=11, n_test=11, tile_size=32, export_levircc=False)
    src = SyntheticSource(write_demo_world(tmp_path / "w", seed=7, config=cfg))
    for rec in src.records():
        assert len(set(rec["captions"])) == 5, rec["pair_id"]
        if "count" in rec["facts"]:
            assert rec["facts"]["count"] >= 1, rec["pair_id"]
        assert (rec["change_fraction"] > 0) == rec["changed"], rec["pair_id"]
    for seed in range(30):  # crowded tiny tiles: an event always has at least one house
        for kind in ("buildings_built", "buildings_demolished", "vegetation_cleared_for_buildings"):
            assert lc.make_tile(np.random.default_rng(seed), kind, 32).facts["count"] >= 1


def test_levircc_export_follows_the_official_schema(world, pairs) -> None:
    root = world[0] / "levircc"
    doc = json.loads((root / "LevirCCcaptions.json").read_text())
    images = doc["images"]
    assert len(images) == len(pairs)
    by_name = {im["filename"]: im for im in images}
    sentids = [s["sentid"] for im in images for s in im["sentences"]]
    assert sentids == list(range(len(sentids)))
    for p in pairs:
        im = by_name[f"{p.pair_id}.png"]
        assert im["split"] == im["filepath"] == p.split and im["changeflag"] == int(p.changed)
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s, cap in zip(im["sentences"], p.captions, strict=True):
            assert s["raw"] == f" {cap} ." and s["tokens"] == cap.split() and s["imgid"] == im["imgid"]
        for folder, when in (("A", "before"), ("B", "after")):
            png = np.asarray(Image.open(root / "images" / p.split / folder / im["filename"]))
            assert png.dtype == np.uint8 and np.array_equal(png, p.rgb(when)), (p.pair_id, folder)


def test_source_lookup_and_bad_input(tmp_path: Path, source) -> None:
    pair = source.pair("test_000003")
    assert pair.split == "test" and pair.before.dtype == np.float32 and 0 <= pair.before.min()
    with pytest.raises(InputError, match="nope"):
        source.pair("nope")
    with pytest.raises(InputError, match="split"):
        list(source.pairs("dev"))
    with pytest.raises(InputError, match="world.json"):
        SyntheticSource(tmp_path)
    (tmp_path / "world.json").write_text('{"images": []}')
    with pytest.raises(InputError, match="manifest"):
        SyntheticSource(tmp_path)
    (tmp_path / "precious.txt").write_text("keep me")
    (tmp_path / "world.json").unlink()
    with pytest.raises(InputError, match="refusing"):
        write_demo_world(tmp_path, config=SMALL)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="tile_size"):
        SyntheticWorldConfig(tile_size=8)


def test_cli_demo_data_writes_and_replaces_a_world(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["demo-data", "--out", str(tmp_path / "w"), "--seed", "3",
            "--train-pairs", "10", "--val-pairs", "9", "--test-pairs", "9"]
    for _ in range(2):  # the second run replaces the first world atomically
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "train 10, val 9, test 9 pairs" in result.output and "none " in result.output
    assert len(SyntheticSource(tmp_path / "w")) == 28
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_every_loader_reads_the_world(world, pairs) -> None:
    from textitsr.data.registry import open_source

    root = world[0]
    assert isinstance(open_source(root), SyntheticSource)
    levir = {p.split + p.pair_id[-6:]: p for p in open_source(root / "levircc", kind="levircc").pairs()}
    assert len(levir) == len(pairs)
    for p in pairs[::7]:
        twin = levir[p.split + p.pair_id[-6:]]
        assert twin.captions == p.captions and twin.changed == p.changed
        assert np.array_equal(twin.rgb("after"), p.rgb("after"))
    scene = root / "scenes" / "test"
    tiles = list(open_source([scene / "before.tif", scene / "after.tif"], kind="geotiff").pairs())
    assert tiles and tiles[0].dates == pairs[-1].dates and tiles[0].bands == ("red", "green", "blue", "nir")
