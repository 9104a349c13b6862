"""Reader of a synthetic world folder (written by `textitsr.synth.world.write_demo_world`).

Why here: a written world is a dataset on disk like any other (a `world.json` manifest plus GeoTIFF
scenes), so reading it belongs with the other readers; making one is `textitsr.synth`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from textitsr.data.pairs import SPLITS, BitemporalPair, PairSourceBase, SceneDisplay
from textitsr.errors import InputError

#: Ground-truth change events (one per tile, applied at the after date):
#:   none                  nothing; the dates differ only by radiometry (gain, season) and sensor noise
#:   buildings_built       1-8 houses (roof + shadow) appear on bare land or grass, often along a road
#:   buildings_demolished  1-8 houses are replaced by rubble / bare soil
#:   road_built            a new straight, diagonal or winding road crosses the tile
#:   road_extended         a road ending mid-tile continues to the opposite edge
#:   vegetation_cleared    trees in one part of the tile become bare soil
#:   vegetation_grown      bare soil in one part of the tile becomes trees or grass
#:   water_expanded        a pond grows to about 1.5-1.9 times its radius
#:   water_receded         a pond shrinks, leaving a ring of wet soil
#: Combined events (analysts' queries combine changes: "a new road and several houses are built"):
#:   road_and_buildings_built          a new road crosses bare land or cleared trees and 2-8 houses
#:                                     are built along it
#:   vegetation_cleared_for_buildings  trees in one part of the tile are cut down and 2-8 houses are
#:                                     built in the clearing
CHANGE_TYPES: tuple[str, ...] = (
    "none",
    "buildings_built",
    "buildings_demolished",
    "road_built",
    "road_extended",
    "vegetation_cleared",
    "vegetation_grown",
    "water_expanded",
    "water_receded",
    "road_and_buildings_built",
    "vegetation_cleared_for_buildings",
)
BANDS = ("red", "green", "blue", "nir")
MANIFEST = "world.json"
FORMAT = "textitsr-synthetic-world"
VERSION = 1


class SyntheticSource(PairSourceBase):
    """Pairs of a world written by `write_demo_world`: windows of its GeoTIFF scenes + manifest facts."""

    name = "synthetic"

    def __init__(self, root: Path) -> None:
        root = Path(root)
        self.root = root.parent if root.name == MANIFEST else root
        path = self.root / MANIFEST
        if not path.is_file():
            raise InputError(f"{path}: missing; expected a synthetic world written by `textitsr demo-data`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: not readable JSON ({err})") from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "pairs" not in manifest:
            raise InputError(f"{path}: expected a {FORMAT!r} manifest with 'pairs' and 'scenes'")
        self.manifest = manifest
        self.scenes: dict[str, dict] = manifest["scenes"]
        self._records: list[dict] = manifest["pairs"]

    def __len__(self) -> int:
        return len(self._records)

    def paths(self) -> list[Path]:
        return [self.root]

    def map_scenes(self) -> list[SceneDisplay]:
        """Each split's before/after scene, shown as its pairs are: bands 1-3 (RGB), bytes / 255."""
        rgb = tuple(BANDS.index(b) + 1 for b in ("red", "green", "blue"))
        return [SceneDisplay(self.root / self.scenes[split]["files"][when], rgb, ((0.0, 255.0),) * 3)
                for split in SPLITS if split in self.scenes and self.records(split)
                for when in ("before", "after")]

    def count(self, split: str | None = None) -> int:
        return len(self.records(split))

    def records(self, split: str | None = None) -> list[dict]:
        """Manifest rows (no pixels): ids, captions, change types, windows, bounds."""
        if split is not None and split not in SPLITS:
            raise InputError(f"split {split!r}: expected one of {SPLITS}")
        return [r for r in self._records if split is None or r["split"] == split]

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        """Yield pairs in manifest order, opening each split's scenes once."""
        for name in SPLITS if split is None else (split,):
            recs = self.records(name)
            if not recs:
                continue
            files = {k: self.root / v for k, v in self.scenes[name]["files"].items()}
            for f in (files["before"], files["after"]):
                if not f.is_file():
                    raise InputError(f"{f}: missing scene of synthetic world {self.root}")
            with rasterio.open(files["before"]) as db, rasterio.open(files["after"]) as da:
                for rec in recs:
                    yield self._pair(rec, db, da, files)

    def pair(self, pair_id: str) -> BitemporalPair:
        """One pair by id (InputError when unknown)."""
        for rec in self._records:
            if rec["pair_id"] == pair_id:
                files = {k: self.root / v for k, v in self.scenes[rec["split"]]["files"].items()}
                with rasterio.open(files["before"]) as db, rasterio.open(files["after"]) as da:
                    return self._pair(rec, db, da, files)
        raise InputError(f"pair id {pair_id!r}: not in synthetic world {self.root}")

    def _pair(self, rec: dict, db: Any, da: Any, files: dict[str, Path]) -> BitemporalPair:
        w = rec["window"]
        win = Window(w["col_off"], w["row_off"], w["width"], w["height"])
        before = db.read(window=win).transpose(1, 2, 0).astype(np.float32) / 255.0
        after = da.read(window=win).transpose(1, 2, 0).astype(np.float32) / 255.0
        return BitemporalPair(
            pair_id=rec["pair_id"], before=before, after=after, bands=BANDS,
            captions=list(rec["captions"]), source=self.name, split=rec["split"],
            bounds=tuple(rec["bounds"]), crs=rec["crs"], native_bounds=tuple(rec["native_bounds"]),
            dates=tuple(rec["dates"]), changed=bool(rec["changed"]), change_type=rec["change_type"],
            location={"kind": self.name, "before": str(files["before"]), "after": str(files["after"]),
                      "window": [w["col_off"], w["row_off"], w["width"], w["height"]],
                      "change_mask": str(files["change"])},
        )


def summary(root: Path, seconds: float | None = None) -> str:
    """One line: pairs per split and per change type (for the CLI)."""
    src = SyntheticSource(root)
    per_split = {s: len(src.records(s)) for s in SPLITS}
    per_type = {t: sum(r["change_type"] == t for r in src.records()) for t in CHANGE_TYPES}
    return (f"synthetic world {root}: " + ", ".join(f"{s} {n}" for s, n in per_split.items())
            + " pairs; " + ", ".join(f"{t} {n}" for t, n in per_type.items())
            + (f" ({seconds:.1f} s)" if seconds is not None else ""))
