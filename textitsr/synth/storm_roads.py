"""Two more change syntheses on real tiles: storm-thrown forest and newly laid roads.

Why: the first syntheses (`realsynth.py`) clear trees to bare soil and build a road only where a
tile already had one removed. Real vegetation loss in disaster imagery (hurricanes, tornadoes) looks
different: crowns stripped to grey-brown, trunks lying in one wind direction, some crowns left
standing. And new roads in change datasets are mostly bright strips laid across open ground, often
on tiles that had no road. Both are made here from the tile's own pixels, so the pairs stay real
texture with an exactly known change.

Both return `SynthChange`s with the existing change types ("vegetation_cleared", "road_built"), so
their captions come from the same LEVIR-CC wording as the other pairs of those types.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from textitsr.synth.realsynth import SOIL_TINT, RealTile, SynthChange, fill, texture_canvas, tree_blob

#: Light colour of bare wood and debris (RGB) streaked over stripped canopy.
TRUNK_RGB = np.array([196.0, 182.0, 158.0], np.float32)
#: A new road's surface when the tile has no road to copy: concrete/fresh asphalt greys (RGB).
ROAD_GREYS = ((182.0, 178.0, 170.0), (120.0, 118.0, 115.0), (205.0, 196.0, 178.0))


def _streaks(shape: tuple[int, int], where: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Thin line segments (fallen trunks) of 8-24 px, all near one direction, inside `where`."""
    ys, xs = np.nonzero(where)
    out = np.zeros(shape, np.float32)
    if len(ys) == 0:
        return out
    n = int(len(ys) / 150) + 1
    for i in rng.integers(len(ys), size=n):
        a = angle + rng.normal(0, 0.25)
        length = rng.uniform(8, 24)
        t = np.linspace(0, length, int(length) * 2)
        yy = np.clip((ys[i] + t * np.sin(a)).astype(int), 0, shape[0] - 1)
        xx = np.clip((xs[i] + t * np.cos(a)).astype(int), 0, shape[1] - 1)
        out[yy, xx] = 1.0
    return np.clip(ndimage.gaussian_filter(out, 0.6) * 2.5, 0, 1) * where


def storm_damage(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    """After: a blob of the tree cover wind-thrown (stripped crowns, fallen trunks, a few survivors)."""
    mask = tree_blob(tile, rng)
    if mask is None:
        return None
    img = tile.image.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    stripped = (0.3 * img + 0.7 * grey) * SOIL_TINT * rng.uniform(1.3, 1.8)  # bare branches, litter
    ground = texture_canvas(tile.image, (tile.layer("ground") | tile.layer("field")) & tile.valid, rng)
    if ground is not None:  # the forest floor shows through
        stripped = 0.5 * stripped + 0.5 * ground * SOIL_TINT
    trunks = _streaks(mask.shape, mask, rng.uniform(0, np.pi), rng)[..., None]
    debris = (1 - 0.5 * trunks) * stripped + 0.5 * trunks * TRUNK_RGB + rng.normal(0, 10, img.shape)
    survivors = ndimage.gaussian_filter(rng.random(mask.shape), 3)
    keep = survivors > np.quantile(survivors, rng.uniform(0.75, 0.95))
    canvas = np.where(keep[..., None], img, debris)
    return SynthChange(tile.image.copy(), fill(tile.image, mask, canvas), mask, "vegetation_cleared")


def _road_band(shape: tuple[int, int], width: float, rng: np.random.Generator) -> np.ndarray:
    """A straight or gently curved band across the tile, `width` px wide."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    bend = rng.uniform(-1, 1) * 0.002 * along**2
    return np.abs(across - bend) < width / 2


def laid_road(tile: RealTile, rng: np.random.Generator) -> SynthChange | None:
    """After: a new road strip (the tile's own road texture, else a concrete grey) across open ground."""
    ground = (tile.layer("ground") | tile.layer("field") | tile.layer("tree")) & tile.valid
    blocked = ndimage.binary_dilation(tile.layer("building") | tile.layer("water"), iterations=3)
    h, w = ground.shape
    for _ in range(8):
        band = _road_band((h, w), rng.uniform(0.03, 0.07) * min(h, w), rng)
        if band.mean() < 0.02 or (band & blocked).any() or (band & ~ground).mean() > 0.3 * band.mean():
            continue
        road = tile.layer("road") & tile.valid
        canvas = texture_canvas(tile.image, road, rng) if road.mean() > 0.01 else None
        if canvas is None:
            tone = np.array(ROAD_GREYS[int(rng.integers(len(ROAD_GREYS)))], np.float32)
            canvas = tone * rng.uniform(0.9, 1.1) + rng.normal(0, 6, tile.image.shape)
        after = fill(tile.image, band, canvas)
        return SynthChange(tile.image.copy(), after, band, "road_built", 1)
    return None


#: The operations by synthesis name; their change types are existing ones (see the module doc).
MORE_OPERATIONS = {"vegetation_storm_damage": storm_damage, "road_laid": laid_road}
