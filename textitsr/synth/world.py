"""Procedural, georeferenced demo world: two-date GeoTIFF scenes with known change events and captions.

Why: the demo and the benchmarks need an archive that ships with the code (no download), is
georeferenced like real imagery (map, bbox filters, lon/lat footprints) and whose ground truth is
known exactly (change type, where, how many), so retrieval quality can be measured.

Layout written by `write_demo_world(out)` (the whole folder appears atomically)::

    out/world.json                          manifest read by `SyntheticSource`
    out/scenes/{split}/before.tif, after.tif  4-band (red, green, blue, nir) uint8 GeoTIFFs, ~1 m pixels,
                                            UTM (EPSG:32614, central Texas); tags ACQUISITION_DATE
    out/scenes/{split}/change.tif           1-band uint8 ground-truth change mask (255 = changed)
    out/levircc/images/{split}/{A,B}/*.png  the same pairs in the official LEVIR-CC layout (RGB)
    out/levircc/LevirCCcaptions.json        official caption schema (images[].sentences[], changeflag)

Each split is its own scene at its own place (disjoint worlds); its pairs are a grid of tile windows.
Every tile draws land cover (bare soil, grass, textured trees, ponds, concrete/asphalt roads, houses
with roofs and shadows) and applies one change event of `CHANGE_TYPES` at the after date; both dates
get a small gain/offset/season shift and sensor noise so that no-change pairs are not identical.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from textitsr.atomic import atomic_dir
from textitsr.config import DEMO_SEED
from textitsr.data.pairs import SPLITS
from textitsr.data.world import BANDS, CHANGE_TYPES, FORMAT, MANIFEST, VERSION
from textitsr.errors import InputError
from textitsr.outputs import WORLD, check_output_dir
from textitsr.synth import landcover as lc
from textitsr.synth.world_captions import captions_for

#: Each split's scene: a place name, the UTM (EPSG:32614) upper-left corner, and its two dates.
SPLIT_SCENES: dict[str, dict[str, Any]] = {
    "train": {"place": "Pflugerville, Texas", "west": 630000.0, "north": 3370000.0,
              "dates": ("2016-04-18", "2019-05-02")},
    "val": {"place": "Georgetown, Texas", "west": 624000.0, "north": 3392000.0,
            "dates": ("2015-10-03", "2018-09-21")},
    "test": {"place": "Kyle, Texas", "west": 605000.0, "north": 3321000.0,
             "dates": ("2017-03-11", "2020-04-06")},
}


@dataclass(frozen=True)
class SyntheticWorldConfig:
    """Size and shape of a synthetic world. Defaults: the embedded demo (1,800 pairs, ~1 m pixels)."""

    n_train: int = 1200
    n_val: int = 200
    n_test: int = 400
    #: Tile side in pixels; at 1 m a 128 px tile holds several houses (10-16 px) and a road (5-10 px).
    tile_size: int = 128
    pixel_size: float = 1.0
    crs: str = "EPSG:32614"
    #: Weight of "none" relative to 1 for each change type; the default keeps 20% of tiles unchanged.
    none_weight: float = (len(CHANGE_TYPES) - 1) / 4
    export_levircc: bool = True

    def count(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def __post_init__(self) -> None:
        if self.tile_size < 32:
            raise InputError(f"SyntheticWorldConfig.tile_size: expected >= 32 pixels, got {self.tile_size}")
        for split in SPLITS:
            if self.count(split) < 0:
                raise InputError(f"SyntheticWorldConfig.n_{split}: expected >= 0, got {self.count(split)}")


def _type_schedule(n: int, none_weight: float, rng: np.random.Generator) -> list[str]:
    """Exactly proportional, shuffled change types, so even a small split covers every type."""
    weights = np.array([none_weight] + [1.0] * (len(CHANGE_TYPES) - 1))
    quota = weights / weights.sum() * n
    counts = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    schedule = [t for t, c in zip(CHANGE_TYPES, counts, strict=True) for _ in range(c)]
    return [schedule[i] for i in rng.permutation(n)]


def _assign_types(kinds: list[str], world: lc.Scene, cols: int, t: int,
                  rng: np.random.Generator) -> list[str]:
    """Put events that need a road-free tile (new roads, ponds) where the scene's roads do not pass."""
    n = len(kinds)
    has_road = [world.road((i // cols) * t, (i % cols) * t, t) is not None for i in range(n)]
    free = [int(i) for i in rng.permutation(n) if not has_road[i]]
    busy = [int(i) for i in rng.permutation(n) if has_road[i]]
    ordered = [k for k in kinds if k in lc.ROAD_FREE] + [k for k in kinds if k not in lc.ROAD_FREE]
    out = [""] * n
    for cell, kind in zip(free + busy, ordered, strict=True):
        out[cell] = kind
    return out


def _split_seed(seed: int, split: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLITS.index(split), 0x5E17])


def _tile_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


_COLOR_INTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)


def _scene_profile(cfg: SyntheticWorldConfig, width: int, height: int, transform: Any, count: int) -> dict:
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": "uint8",
               "crs": cfg.crs, "transform": transform, "compress": "deflate", "zlevel": 1, "predictor": 2}
    if cfg.tile_size % 16 == 0:  # one TIFF block per tile: a tile read touches one block
        profile.update(tiled=True, blockxsize=cfg.tile_size, blockysize=cfg.tile_size)
    return profile


def _write_split(out: Path, split: str, seed: int, cfg: SyntheticWorldConfig) -> tuple[dict, list[dict]]:
    """Render one split's scene (both dates + change mask) tile by tile; return scene + pair records."""
    n, t = cfg.count(split), cfg.tile_size
    srng = np.random.default_rng(_split_seed(seed, split))
    spec = SPLIT_SCENES[split]
    west = spec["west"] + float(srng.integers(-300, 300)) * 10.0  # seed moves the place by up to 3 km
    north = spec["north"] + float(srng.integers(-300, 300)) * 10.0
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, int(np.ceil(n / cols)))
    width, height = cols * t, rows * t
    transform = from_origin(west, north, cfg.pixel_size, cfg.pixel_size)
    world = lc.make_scene(srng, width, height)
    schedule = _assign_types(_type_schedule(n, cfg.none_weight, srng), world, cols, t, srng)
    radiometry = lc.date_radiometry(srng)
    d0, d1 = spec["dates"]
    scene_dir = out / "scenes" / split
    scene_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: scene_dir / f"{k}.tif" for k in ("before", "after", "change")}
    native_scene = (west, north - height * cfg.pixel_size, west + width * cfg.pixel_size, north)
    scene = {"place": spec["place"], "crs": cfg.crs, "dates": [d0, d1], "width": width, "height": height,
             "native_bounds": list(native_scene),
             "bounds": list(transform_bounds(cfg.crs, "EPSG:4326", *native_scene)),
             "files": {k: p.relative_to(out).as_posix() for k, p in paths.items()}}
    records: list[dict] = []
    levir = out / "levircc" / "images" / split
    with rasterio.open(paths["before"], "w", **_scene_profile(cfg, width, height, transform, 4)) as db, \
            rasterio.open(paths["after"], "w", **_scene_profile(cfg, width, height, transform, 4)) as da, \
            rasterio.open(paths["change"], "w", **_scene_profile(cfg, width, height, transform, 1)) as dm:
        for ds, date in ((db, d0), (da, d1)):
            ds.descriptions = BANDS
            ds.colorinterp = _COLOR_INTERP  # else GDAL calls a 4th uint8 band alpha, not nir
            ds.update_tags(ACQUISITION_DATE=date, TIFFTAG_DATETIME=date.replace("-", ":") + " 10:30:00",
                           PLACE=spec["place"], SOURCE="textitsr synthetic world", SEED=str(seed))
        dm.descriptions = ("change",)

        def put_tile(win: Window, before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> None:
            db.write(before.transpose(2, 0, 1), window=win)
            da.write(after.transpose(2, 0, 1), window=win)
            dm.write((mask.astype(np.uint8) * 255)[None], window=win)

        with _Writers() as writers:
            for i in range(rows * cols):
                r, c = divmod(i, cols)
                win = Window(c * t, r * t, t, t)
                kind = schedule[i] if i < n else "none"  # grid cells past n are unlisted filler
                rng = _tile_rng(seed, split, i)
                tile = lc.make_tile(rng, kind, t, world, (r * t, c * t))
                before = lc.render(tile.before, tile.texture, radiometry[0], rng)
                after = lc.render(tile.after, tile.texture, radiometry[1], rng)
                writers.submit("tif", put_tile, win, before, after, tile.mask)
                if i >= n:
                    continue
                pair_id = f"{split}_{i + 1:06d}"
                if cfg.export_levircc:
                    writers.submit("png", lc.write_png, levir / "A" / f"{pair_id}.png", before[..., :3])
                    writers.submit("png", lc.write_png, levir / "B" / f"{pair_id}.png", after[..., :3])
                records.append(_record(pair_id, split, kind, tile, rng, win, transform, cfg, (d0, d1)))
    return scene, records


def _record(pair_id: str, split: str, kind: str, tile: lc.Tile, rng: np.random.Generator, win: Window,
            transform: Any, cfg: SyntheticWorldConfig, dates: tuple[str, str]) -> dict:
    """The manifest row of one pair: ground truth, captions and where it lies."""
    native = rasterio.windows.bounds(win, transform)
    return {
        "pair_id": pair_id, "split": split, "change_type": kind, "changed": kind != "none",
        "captions": captions_for(tile.facts, rng), "facts": tile.facts,
        "change_fraction": round(float(tile.mask.mean()), 4),
        "window": {"col_off": int(win.col_off), "row_off": int(win.row_off), "width": int(win.width),
                   "height": int(win.height)},
        "native_bounds": list(native),
        "bounds": list(transform_bounds(cfg.crs, "EPSG:4326", *native)),
        "dates": list(dates), "crs": cfg.crs,
    }


class _Writers:
    """Two writer threads (GeoTIFF blocks, PNGs) so compression overlaps tile generation.

    GDAL and zlib release the GIL, so on 2 cores the world generates in ~half the wall time. Each
    lane is one thread (a rasterio dataset is not thread-safe); at most `limit` jobs wait in memory.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.lanes = {lane: ThreadPoolExecutor(max_workers=1) for lane in ("tif", "png")}
        self.pending: deque[Future] = deque()

    def submit(self, lane: str, fn: Any, *args: Any) -> None:
        self.pending.append(self.lanes[lane].submit(fn, *args))
        while len(self.pending) > self.limit:
            self.pending.popleft().result()  # re-raises a writer's error here

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                while self.pending:
                    self.pending.popleft().result()
        finally:
            for pool in self.lanes.values():
                pool.shutdown(wait=True, cancel_futures=True)


def _write_levircc_json(dest: Path, records: list[dict]) -> None:
    """The official LevirCCcaptions.json schema, so the LEVIR-CC loader reads the same world."""
    images, sentid = [], 0
    for imgid, rec in enumerate(records):
        sentences = []
        for text in rec["captions"]:
            sentences.append({"tokens": text.split(), "raw": f" {text} .", "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"filepath": rec["split"], "filename": f"{rec['pair_id']}.png", "imgid": imgid,
                       "sentences": sentences, "split": rec["split"],
                       "sentids": [s["sentid"] for s in sentences], "changeflag": int(rec["changed"])})
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"images": images}), encoding="utf-8")


def write_demo_world(out: Path, seed: int = DEMO_SEED, config: SyntheticWorldConfig | None = None) -> Path:
    """Generate the world into `out` (replacing an older world there atomically); return `out`."""
    out = Path(out)
    cfg = config or SyntheticWorldConfig()
    check_output_dir(out, (WORLD,))
    with atomic_dir(out) as tmp:
        scenes, pairs = {}, []
        for split in SPLITS:
            scenes[split], recs = _write_split(tmp, split, seed, cfg)
            pairs += recs
        if cfg.export_levircc:
            _write_levircc_json(tmp / "levircc" / "LevirCCcaptions.json", pairs)
        manifest = {"format": FORMAT, "version": VERSION, "seed": seed, "config": asdict(cfg),
                    "bands": list(BANDS), "change_types": list(CHANGE_TYPES), "scenes": scenes,
                    "pairs": pairs}  # no timestamps: same seed and config, byte-identical manifest
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out
