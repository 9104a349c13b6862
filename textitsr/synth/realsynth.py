"""Change synthesis on real single-date tiles with semantic masks (ChangeStar / Changen spirit).

Why: real bitemporal pairs with captions are scarce, but real single-date tiles with masks are not.
Removing objects from a real tile (filling them with texture copied from the tile's own ground,
trees or water) fabricates a plausible other date, so every pair below is made of real pixels and
its change is known exactly: where (the mask), what (the type) and how much (the count).

Every operation returns a `SynthChange` whose before and after differ only inside `mask` dilated
by `FEATHER` pixels (the seam blend); sensor-like differences (lighting, season, blur, a small
shift) are added afterwards by `jitter`, to both dates independently, so that appearance change
alone never means "change".

References: Zheng et al., "Change is Everywhere: single-temporal supervised object change detection"
(ChangeStar, ICCV 2021); Zheng et al., "Scalable multi-temporal remote sensing change data generation
via simulating stochastic change process" (Changen, ICCV 2023).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from textitsr.errors import InputError

#: Pixels around a filled region that the seam blend may touch.
FEATHER = 3
#: Smallest object (pixels) counted as an instance.
MIN_INSTANCE = 40

#: Class ids of each mask scheme (realtrain/classes.json) per semantic layer.
SCHEME_LAYERS: dict[str, dict[str, tuple[int, ...]]] = {
    "loveda": {
        "building": (2,),
        "road": (3,),
        "water": (4,),
        "tree": (6,),
        "field": (7,),
        "ground": (1, 5, 7),
    },
    "isprs_potsdam": {"building": (2,), "road": (1,), "tree": (4,), "field": (3,), "ground": (3,)},
    "isprs_vaihingen": {"building": (2,), "road": (1,), "tree": (4,), "field": (3,), "ground": (3,)},
    "binary_building": {"building": (1,), "ground": (0,)},
    "binary_road": {"road": (1,), "ground": (0,)},
    "sen1floods11_water": {"water": (1,), "ground": (0,)},
}
NODATA: dict[str, tuple[int, ...]] = {"loveda": (0,), "sen1floods11_water": (255,)}


@dataclass
class RealTile:
    """One real RGB tile (uint8 H x W x 3) with boolean semantic layers and its provenance."""

    name: str
    image: np.ndarray
    layers: dict[str, np.ndarray]
    valid: np.ndarray
    false_colour: bool = False
    source: str = ""

    def layer(self, name: str) -> np.ndarray:
        return self.layers.get(name, np.zeros(self.image.shape[:2], bool))

    def transformed(self, fn: Callable[[np.ndarray], np.ndarray]) -> RealTile:
        """The same tile with a geometric transform applied to the image and every mask."""
        return RealTile(
            self.name,
            np.ascontiguousarray(fn(self.image)),
            {k: np.ascontiguousarray(fn(v)) for k, v in self.layers.items()},
            np.ascontiguousarray(fn(self.valid)),
            self.false_colour,
            self.source,
        )


@dataclass
class SynthChange:
    """A fabricated pair: uint8 before/after, the changed pixels, what changed and how many."""

    before: np.ndarray
    after: np.ndarray
    mask: np.ndarray
    change_type: str
    count: int | None = None


def read_tiles(root: Path) -> list[RealTile]:
    """All tiles of a realtrain folder (images/, masks/, tiles.jsonl), with layers by class scheme."""
    root = Path(root)
    index = root / "tiles.jsonl"
    if not index.is_file():
        raise InputError(f"{index}: not found; expected a realtrain folder with tiles.jsonl, images/, masks/")
    tiles = []
    for line_no, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        meta = json.loads(line)
        scheme = meta.get("class_scheme")
        if scheme not in SCHEME_LAYERS:
            raise InputError(
                f"{index}:{line_no}: class_scheme {scheme!r}; expected one of {sorted(SCHEME_LAYERS)}"
            )
        image = np.asarray(Image.open(root / "images" / f"{meta['name']}.png").convert("RGB"))
        mask = np.asarray(Image.open(root / "masks" / f"{meta['name']}.png"))
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"{root / 'masks' / meta['name']}.png: mask {mask.shape} vs image {image.shape[:2]}"
            )
        layers = {k: np.isin(mask, ids) for k, ids in SCHEME_LAYERS[scheme].items()}
        valid = ~np.isin(mask, NODATA.get(scheme, ()))
        tiles.append(
            RealTile(
                meta["name"], image, layers, valid, bool(meta.get("false_colour")), meta.get("source", "")
            )
        )
    return tiles


# --------------------------------------------------------------------------------- texture fill
def texture_canvas(image: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A full-size texture quilted from random patches lying (almost) wholly in `allowed`.

    Patches overlap by a quarter and are blended with tent weights, so seams do not show; the
    largest patch size (32, 16, 8 px) that finds at least 4 candidate places is used. None when
    no allowed region is big enough.
    """
    h, w = allowed.shape
    for size in (32, 16, 8):
        frac = ndimage.uniform_filter(allowed.astype(np.float32), size=size, mode="constant")
        half = size // 2
        ys, xs = np.nonzero(frac[half : h - half + 1, half : w - half + 1] >= 0.95)
        if len(ys) >= 4:
            break
    else:
        return None
    step = max(1, size * 3 // 4)
    ramp = np.minimum(np.arange(1, size + 1), np.arange(size, 0, -1)).astype(np.float32)
    weight = np.outer(ramp, ramp)[..., None]
    acc = np.zeros((h + 2 * size, w + 2 * size, image.shape[2]), np.float32)
    norm = np.zeros((h + 2 * size, w + 2 * size, 1), np.float32)
    for y in range(-step, h, step):
        for x in range(-step, w, step):
            k = rng.integers(len(ys))
            patch = image[ys[k] : ys[k] + size, xs[k] : xs[k] + size].astype(np.float32)
            y0, x0 = y + step, x + step
            acc[y0 : y0 + size, x0 : x0 + size] += patch * weight
            norm[y0 : y0 + size, x0 : x0 + size] += weight
    canvas = acc / np.maximum(norm, 1e-6)
    return canvas[step : step + h, step : step + w]


def fill(image: np.ndarray, mask: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """`image` with `mask` replaced by `canvas`, blended over at most FEATHER pixels outside it."""
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), sigma=1.0)
    alpha = np.maximum(alpha, mask)
    alpha[~ndimage.binary_dilation(mask, iterations=FEATHER)] = 0.0
    out = alpha[..., None] * canvas + (1.0 - alpha[..., None]) * image.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _fill_from(
    tile: RealTile,
    mask: np.ndarray,
    source: np.ndarray,
    rng: np.random.Generator,
    tint: np.ndarray | None = None,
) -> np.ndarray | None:
    """Fill `mask` with texture from `source` pixels of the same tile (optionally colour-tinted)."""
    canvas = texture_canvas(tile.image, source & ~mask & tile.valid, rng)
    if canvas is None:
        return None
    if tint is not None:
        canvas = canvas * tint
    return fill(tile.image, mask, canvas)


def changed_region(mask: np.ndarray) -> np.ndarray:
    """Pixels that a fill of `mask` may have touched (the mask dilated by FEATHER)."""
    return ndimage.binary_dilation(mask, iterations=FEATHER)


# ----------------------------------------------------------------------------- instance choice
def instances(layer: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a layer (8-connected) and how many there are."""
    labels, n = ndimage.label(layer, structure=np.ones((3, 3), bool))
    return labels, n


def pick_cluster(layer: np.ndarray, rng: np.random.Generator, max_count: int = 8) -> tuple[np.ndarray, int]:
    """A group of 1..max_count nearby instances of `layer` (by centroid distance to a random one)."""
    labels, n = instances(layer)
    if n == 0:
        return np.zeros_like(layer), 0
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    ids = np.arange(1, n + 1)[sizes >= MIN_INSTANCE]
    if len(ids) == 0:
        return np.zeros_like(layer), 0
    centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, ids))
    anchor = centres[rng.integers(len(ids))]
    k = int(rng.integers(1, min(max_count, len(ids)) + 1))
    chosen = ids[np.argsort(np.linalg.norm(centres - anchor, axis=1))[:k]]
    return np.isin(labels, chosen), k


def _grow(mask: np.ndarray, within: np.ndarray, pixels: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=pixels, mask=within) | mask


# ------------------------------------------------------------------------------- the operations
SOIL_TINT = np.array([1.12, 1.0, 0.82], np.float32)


def remove_buildings(
    tile: RealTile, rng: np.random.Generator, to_trees: bool = False
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The tile with a cluster of buildings filled with ground (or tree) texture: (image, mask, count)."""
    chosen, k = pick_cluster(tile.layer("building"), rng)
    if k == 0:
        return None
    mask = ndimage.binary_dilation(chosen, iterations=2) & tile.valid
    source = tile.layer("tree") if to_trees else tile.layer("ground") | tile.layer("field")
    source = source & ~ndimage.binary_dilation(tile.layer("building"), iterations=3)
    image = _fill_from(tile, mask, source, rng)
    return None if image is None else (image, mask, k)


def buildings_built(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    out = remove_buildings(tile, rng)
    return None if out is None else SynthChange(out[0], tile.image.copy(), out[1], "buildings_built", out[2])


def buildings_demolished(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    out = remove_buildings(tile, rng)
    if out is None:
        return None
    after, mask, k = out
    if rng.random() < 0.5:  # rubble: brighter, greyer, grainy where the buildings stood
        grey = after.astype(np.float32).mean(axis=2, keepdims=True)
        rubble = 0.5 * after + 0.5 * grey * 1.15 + rng.normal(0, 12, after.shape)
        after = fill(after, ndimage.binary_erosion(mask, iterations=FEATHER), rubble)
    return SynthChange(tile.image.copy(), after, mask, "buildings_demolished", k)


def cleared_for_buildings(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    """Before: the buildings' place filled with the tile's trees; after: the real buildings."""
    if tile.layer("tree").mean() < 0.05:
        return None
    out = remove_buildings(tile, rng, to_trees=True)
    if out is None:
        return None
    return SynthChange(out[0], tile.image.copy(), out[1], "vegetation_cleared_for_buildings", out[2])


def road_built(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    """Before: one road network component filled with the ground around it."""
    labels, n = instances(tile.layer("road"))
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    big = np.arange(1, n + 1)[sizes >= 4 * MIN_INSTANCE]
    if len(big) == 0:
        return None
    mask = ndimage.binary_dilation(labels == rng.choice(big), iterations=2) & tile.valid
    source = (tile.layer("ground") | tile.layer("field") | tile.layer("tree")) & ~ndimage.binary_dilation(
        tile.layer("road") | tile.layer("building"), iterations=3
    )
    before = _fill_from(tile, mask, source, rng)
    return None if before is None else SynthChange(before, tile.image.copy(), mask, "road_built", 1)


def tree_blob(tile: RealTile, rng: np.random.Generator) -> np.ndarray | None:
    """A random blob of the tree cover (trees within a disc around a random tree pixel), or None
    when the tile has too few trees."""
    trees = tile.layer("tree") & tile.valid
    if trees.mean() < 0.05:
        return None
    ys, xs = np.nonzero(trees)
    i = rng.integers(len(ys))
    yy, xx = np.mgrid[: trees.shape[0], : trees.shape[1]]
    radius = rng.uniform(50, 160)
    mask = trees & ((yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 < radius**2)
    mask = ndimage.binary_opening(mask, iterations=2)
    return None if mask.mean() < 0.03 else mask


def _clear_trees(tile: RealTile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """The tile with part of its trees replaced by bare-soil texture: (image, mask)."""
    mask = tree_blob(tile, rng)
    if mask is None:
        return None
    trees = tile.layer("tree") & tile.valid
    source = (tile.layer("ground") | tile.layer("field")) & ~trees
    tint = SOIL_TINT * rng.uniform(1.0, 1.2)
    image = _fill_from(tile, mask, source, rng, tint=tint)
    return None if image is None else (image, mask)


def vegetation_cleared(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    out = _clear_trees(tile, rng)
    return None if out is None else SynthChange(tile.image.copy(), out[0], out[1], "vegetation_cleared")


def vegetation_grown(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    out = _clear_trees(tile, rng)
    return None if out is None else SynthChange(out[0], tile.image.copy(), out[1], "vegetation_grown")


def _shrink_water(tile: RealTile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """The tile with its water shrunk by a ring of 4-20 px, filled with (damp) ground texture."""
    water = tile.layer("water") & tile.valid
    if water.mean() < 0.03:
        return None
    core = ndimage.binary_erosion(water, iterations=int(rng.integers(4, 21)))
    mask = water & ~core
    if mask.mean() < 0.02:
        return None
    source = (tile.layer("ground") | tile.layer("field")) & ~ndimage.binary_dilation(water, iterations=3)
    image = _fill_from(tile, mask, source, rng, tint=np.full(3, rng.uniform(0.8, 1.0), np.float32))
    return None if image is None else (image, mask)


def _grow_water(tile: RealTile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """The tile with its water grown by 4-20 px over ground/field (never over buildings or roads)."""
    water = tile.layer("water") & tile.valid
    if water.mean() < 0.02:
        return None
    land = (tile.layer("ground") | tile.layer("field") | tile.layer("tree")) & tile.valid
    land &= ~ndimage.binary_dilation(tile.layer("building") | tile.layer("road"), iterations=2)
    mask = _grow(water, water | land, int(rng.integers(4, 21))) & ~water
    if mask.mean() < 0.02:
        return None
    image = _fill_from(tile, mask, water, rng)
    return None if image is None else (image, mask)


def water_expanded(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    if rng.random() < 0.5:
        out = _grow_water(tile, rng)
        return None if out is None else SynthChange(tile.image.copy(), out[0], out[1], "water_expanded")
    out = _shrink_water(tile, rng)
    return None if out is None else SynthChange(out[0], tile.image.copy(), out[1], "water_expanded")


def water_receded(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    if rng.random() < 0.5:
        out = _shrink_water(tile, rng)
        return None if out is None else SynthChange(tile.image.copy(), out[0], out[1], "water_receded")
    out = _grow_water(tile, rng)
    return None if out is None else SynthChange(out[0], tile.image.copy(), out[1], "water_receded")


def paste_buildings(tile: RealTile, donor: RealTile, rng: np.random.Generator) -> SynthChange | None:
    """After: 1-6 real buildings cut from `donor` with their masks, pasted on open ground of `tile`."""
    labels, n = instances(donor.layer("building"))
    if n == 0:
        return None
    open_ground = (tile.layer("ground") | tile.layer("field")) & tile.valid
    open_ground &= ~ndimage.binary_dilation(
        tile.layer("building") | tile.layer("road") | tile.layer("water"), iterations=4
    )
    objects = [s for s in ndimage.find_objects(labels) if s is not None]
    rng.shuffle(objects)
    after = tile.image.astype(np.float32)
    mask = np.zeros(open_ground.shape, bool)
    h, w = open_ground.shape
    anchor = np.array([rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w])
    count = 0
    for sl in objects[:40]:
        obj = donor.layer("building")[sl]
        oh, ow = obj.shape
        if obj.sum() < MIN_INSTANCE or oh > h // 3 or ow > w // 3:
            continue
        for _ in range(12):
            y, x = (anchor + rng.normal(0, 40, 2)).astype(int) - (oh // 2, ow // 2)
            if y < 0 or x < 0 or y + oh > h or x + ow > w:
                continue
            spot = (slice(y, y + oh), slice(x, x + ow))
            if not open_ground[spot][obj].all() or mask[spot].any():
                continue
            pixels = donor.image[sl].astype(np.float32)
            # a cast shadow: the footprint shifted down-right, darkened, under the building
            shadow = np.zeros_like(mask)
            shadow[spot] = obj
            shadow = ndimage.shift(shadow, (3, 3), order=0) & ~mask & open_ground
            after[shadow] *= 0.6
            after[spot][obj] = pixels[obj]
            mask[spot] |= obj
            mask |= shadow
            count += 1
            break
        if count >= int(rng.integers(1, 7)):
            break
    if count == 0:
        return None
    pasted = fill(tile.image, mask, after)
    return SynthChange(tile.image.copy(), pasted, mask, "buildings_built", count)


def no_change(tile: RealTile, rng: np.random.Generator) -> SynthChange:
    return SynthChange(tile.image.copy(), tile.image.copy(), np.zeros(tile.image.shape[:2], bool), "none")


#: The operations by name (a tile without the needed layers makes an operation return None).
OPERATIONS: dict[str, Callable[..., SynthChange | None]] = {
    "buildings_built": buildings_built,
    "buildings_demolished": buildings_demolished,
    "vegetation_cleared_for_buildings": cleared_for_buildings,
    "road_built": road_built,
    "vegetation_cleared": vegetation_cleared,
    "vegetation_grown": vegetation_grown,
    "water_expanded": water_expanded,
    "water_receded": water_receded,
    "none": no_change,
}
