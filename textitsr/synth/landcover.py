"""Land cover, change events and rendering of one synthetic tile (used by `textitsr.synth.world`).

A tile is a label map per date (bare soil, grass, trees, water, concrete/asphalt road, roofs, shadow,
wet soil, rubble) plus texture fields shared by both dates, so unchanged ground renders the same and
only the event (and the dates' radiometry) differs. Labels become 4-band reflectance (red, green,
blue, nir) from per-class spectra chosen so NDVI and NDWI behave as on real imagery: trees
NDVI ~0.7, grass ~0.4, soil ~0.05, water NDWI > 0.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from textitsr.synth.world_captions import place_of_mask

BARE, GRASS, TREES, WATER, CONCRETE, ASPHALT = 0, 1, 2, 3, 4, 5
ROOFS = ((6, 7), (8, 9), (10, 11), (12, 13))  # (lit half, shaded half) for red, grey, white, brown roofs
SHADOW, WETSOIL, RUBBLE = 14, 15, 16

_ROOF_COLOURS = ((0.55, 0.26, 0.20, 0.40), (0.46, 0.47, 0.49, 0.42), (0.80, 0.80, 0.78, 0.68),
                 (0.42, 0.31, 0.23, 0.36))
#: Reflectance (red, green, blue, nir) per label.
SPECTRA = np.array(
    [(0.42, 0.36, 0.28, 0.46), (0.20, 0.29, 0.14, 0.50), (0.08, 0.15, 0.07, 0.52), (0.06, 0.11, 0.15, 0.03),
     (0.62, 0.61, 0.58, 0.52), (0.20, 0.20, 0.22, 0.20)]
    + [c for rgbn in _ROOF_COLOURS for c in (rgbn, tuple(0.78 * v for v in rgbn))]
    + [(0.05, 0.06, 0.08, 0.07), (0.27, 0.24, 0.19, 0.24), (0.55, 0.50, 0.44, 0.50)],
    dtype=np.float32,
)
#: Texture amplitude per label for the fine / mid / coarse noise fields.
_AMP = np.zeros((len(SPECTRA), 3), dtype=np.float32)
_AMP[BARE] = (0.04, 0.10, 0.06)
_AMP[GRASS] = (0.04, 0.08, 0.05)
_AMP[TREES] = (0.24, 0.04, 0.03)
_AMP[WATER] = (0.01, 0.02, 0.05)
_AMP[[CONCRETE, ASPHALT]] = (0.03, 0.02, 0.0)
_AMP[6:14] = (0.02, 0.0, 0.0)
_AMP[[WETSOIL, RUBBLE]] = (0.08, 0.08, 0.0)
_VEGETATION = np.isin(np.arange(len(SPECTRA)), (GRASS, TREES))

REGIONS = {
    "top_left": (0.0, 0.0, 0.5, 0.5), "top_right": (0.5, 0.0, 1.0, 0.5),
    "bottom_left": (0.0, 0.5, 0.5, 1.0), "bottom_right": (0.5, 0.5, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5), "bottom": (0.0, 0.5, 1.0, 1.0),
    "left": (0.0, 0.0, 0.5, 1.0), "right": (0.5, 0.0, 1.0, 1.0), "center": (0.25, 0.25, 0.75, 0.75),
}
COVER_LABEL = {"bareland": BARE, "grass": GRASS, "trees": TREES}


@dataclass
class Tile:
    before: np.ndarray  # H x W labels
    after: np.ndarray
    texture: np.ndarray  # 3 x H x W noise fields (fine, mid, coarse), shared by both dates
    mask: np.ndarray  # H x W bool: where the event changed the ground
    facts: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=16)
def _upsampler(size: int, n: int) -> np.ndarray:
    """size x n matrix that smoothly interpolates n control points onto size pixels (Gaussian weights)."""
    pos = (np.arange(size) + 0.5) / size * (n - 3) + 1.5  # control points overhang the edges by 1.5
    w = np.exp(-0.5 * ((pos[:, None] - np.arange(n)[None, :]) / 0.7) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Standardised smooth noise with feature size ~sigma px (coarse fields: separable upsampling)."""
    if sigma >= 6:
        up = _upsampler(size, int(size / sigma) + 3)
        f = up @ rng.standard_normal((up.shape[1], up.shape[1]), dtype=np.float32) @ up.T
    else:
        f = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma, truncate=3.0)
    return (f - f.mean()) / (f.std() + 1e-6)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _region_mask(name: str, size: int, wobble: np.ndarray | None = None) -> np.ndarray:
    """Box of a named region; with `wobble` (a noise field) its edge becomes irregular."""
    x0, y0, x1, y1 = (v * size for v in REGIONS[name])
    yy, xx = _grid(size)
    inside = np.minimum.reduce([xx - x0, x1 - xx, yy - y0, y1 - yy]) / size
    if wobble is None:
        return inside > 0
    return inside + 0.05 * wobble > 0.03


def _polyline_distance(pts: np.ndarray, size: int) -> np.ndarray:
    """Distance of every pixel to a polyline (N x 2 array of x, y points)."""
    yy, xx = _grid(size)
    best = np.full((size, size), np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:], strict=True):
        dx, dy = bx - ax, by - ay
        t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
        best = np.minimum(best, np.hypot(xx - ax - t * dx, yy - ay - t * dy))
    return best


def _road_points(rng: np.random.Generator, size: int, orientation: str) -> np.ndarray:
    """A road polyline crossing the tile edge to edge (x, y points, running left->right or top->bottom)."""
    s, m = float(size), 6.0
    u = np.linspace(-m, s + m, 17 if orientation == "curved" else 2)
    pos = rng.choice([0.22, 0.5, 0.78]) * s + rng.uniform(-0.06, 0.06) * s
    if orientation == "curved":
        amp, phase = rng.uniform(0.08, 0.16) * s, rng.uniform(0, 2 * np.pi)
        v = 0.5 * s + amp * np.sin(2 * np.pi * u / (s * rng.uniform(0.9, 1.4)) + phase)
        return np.stack([u, v], 1) if rng.random() < 0.5 else np.stack([v, u], 1)
    if orientation == "diagonal":
        a, b = rng.uniform(-0.1, 0.35) * s, rng.uniform(0.65, 1.1) * s
        return np.stack([u, a + (b - a) * (u + m) / (s + 2 * m)], 1)
    v = pos + rng.uniform(-0.05, 0.05) * s * (u - s / 2) / s
    return np.stack([u, v], 1) if orientation == "horizontal" else np.stack([v, u], 1)


class WaveField:
    """A smooth random field defined everywhere in scene pixels (sum of random plane waves, std ~1).

    Evaluated window by window, it is continuous across tile borders, so forests, fields and bare
    land run from one tile into the next as in a real scene.
    """

    def __init__(self, rng: np.random.Generator, wavelengths: tuple[float, float], n: int = 24) -> None:
        angle = rng.uniform(0, 2 * np.pi, n)
        k = 2 * np.pi / np.exp(rng.uniform(np.log(wavelengths[0]), np.log(wavelengths[1]), n))
        self.kx, self.ky = (k * np.cos(angle)).astype(np.float32), (k * np.sin(angle)).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        self.amp = np.float32(np.sqrt(2.0 / n))

    def window(self, row_off: int, col_off: int, size: int) -> np.ndarray:
        y = np.arange(size, dtype=np.float32) + row_off + 0.5
        x = np.arange(size, dtype=np.float32) + col_off + 0.5
        a, b = self.ky[:, None] * y, self.kx[:, None] * x + self.phase[:, None]  # cos(a+b), separably
        return self.amp * (np.einsum("kh,kw->hw", np.cos(a), np.cos(b))
                           - np.einsum("kh,kw->hw", np.sin(a), np.sin(b)))


@dataclass
class Scene:
    """Scene-wide land cover fields and a sparse straight road network (pixel coordinates)."""

    cover: WaveField
    landscape: WaveField
    grain: WaveField  # coarse texture (soil moisture, water tone): continuous across tiles too
    roads: list[tuple[np.ndarray, float, int]]  # (2 x 2 end points x, y; width; label)

    def road(self, row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(distance to the road edge, road label per pixel) in a window, or None when no road crosses it."""
        best, label = None, None
        centre = np.array([col_off + size / 2, row_off + size / 2], dtype=np.float32)
        for pts, width, lab in self.roads:
            (ax, ay), (bx, by) = pts
            if abs((bx - ax) * (centre[1] - ay) - (by - ay) * (centre[0] - ax)) / np.hypot(bx - ax, by - ay) \
                    > 0.71 * size + width:  # the road's line passes far from this window
                continue
            local = pts - np.array([col_off, row_off], dtype=np.float32)
            d = _polyline_distance(local, size) - width / 2
            if d.min() > 0:
                continue
            if best is None:
                best, label = d, np.full((size, size), lab, dtype=np.uint8)
            else:
                label = np.where(d < best, lab, label).astype(np.uint8)
                best = np.minimum(best, d)
        return None if best is None else (best, label)


def make_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """Fields and roads of one scene: roads every ~250-650 px in both directions."""
    roads: list[tuple[np.ndarray, float, int]] = []
    for axis, extent, across in (("h", height, width), ("v", width, height)):
        pos = float(rng.uniform(60, 400))
        while pos < extent - 30:
            tilt = float(rng.uniform(-0.04, 0.04)) * across
            a, b = np.array([-20.0, pos - tilt / 2]), np.array([across + 20.0, pos + tilt / 2])
            pts = np.stack([a, b]) if axis == "h" else np.stack([a[::-1], b[::-1]])
            label = int(rng.choice([CONCRETE, ASPHALT]))
            roads.append((pts.astype(np.float32), float(rng.uniform(5, 10)), label))
            pos += float(rng.uniform(250, 650))
    return Scene(WaveField(rng, (40, 170)), WaveField(rng, (300, 1200)), WaveField(rng, (12, 40)), roads)


def _background(rng: np.random.Generator, scene: Scene, row_off: int, col_off: int, size: int) -> np.ndarray:
    """Bare / grass / trees from the scene's fields: forests, meadows and bare land vary smoothly."""
    f = scene.cover.window(row_off, col_off, size)
    g = scene.landscape.window(row_off, col_off, size)
    lo, hi = -0.35 - 0.7 * g, 0.45 - 0.7 * g  # g > 0: wooded country, g < 0: bare, dry land
    labels = np.where(f < lo, BARE, np.where(f < hi, GRASS, TREES)).astype(np.uint8)
    labels[(_noise(rng, size, 3.0) > 2.0) & (labels == GRASS)] = TREES  # scattered tree clumps
    return labels


def _place_houses(rng: np.random.Generator, allowed: np.ndarray, occupied: np.ndarray, count: int,
                  sides: tuple[int, int] = (9, 17)) -> list[tuple[int, int, int, int, int]]:
    """Non-overlapping axis-aligned houses (y0, x0, h, w, roof) centred on allowed pixels (may be fewer)."""
    size = allowed.shape[0]
    ys, xs = np.nonzero(allowed & ~occupied)
    taken = occupied.copy()
    houses: list[tuple[int, int, int, int, int]] = []
    for _ in range(count * 25):
        if len(houses) == count or ys.size == 0:
            break
        k = int(rng.integers(ys.size))
        h, w = (int(v) for v in rng.integers(*sides, size=2))
        y0, x0 = int(ys[k]) - h // 2, int(xs[k]) - w // 2
        if y0 < 2 or x0 < 2 or y0 + h + 5 > size or x0 + w + 5 > size:
            continue
        if taken[y0 - 2:y0 + h + 5, x0 - 2:x0 + w + 5].any():
            continue
        taken[y0 - 2:y0 + h + 5, x0 - 2:x0 + w + 5] = True
        houses.append((y0, x0, h, w, int(rng.integers(len(ROOFS)))))
    return houses


def _event_houses(rng: np.random.Generator, allowed: np.ndarray, occupied: np.ndarray, count: int,
                  ) -> list[tuple[int, int, int, int, int]]:
    """Up to `count` houses for a buildings event, never none: an event without objects has no caption.

    Falls back from the allowed area to anywhere free, then to small houses, and on a crowded tiny
    tile to one small house in the freest spot (it may cover part of a static object).
    """
    everywhere = np.ones_like(occupied)
    for where, n, sides in ((allowed, count, (9, 17)), (everywhere, 1, (9, 17)), (everywhere, 1, (6, 9))):
        houses = _place_houses(rng, where, occupied, n, sides)
        if houses:
            return houses
    size, side = occupied.shape[0], 6
    room = ndimage.distance_transform_edt(~occupied)[2:size - side - 4, 2:size - side - 4]
    y, x = np.unravel_index(int(np.argmax(room)), room.shape)
    return [(int(y) + 2, int(x) + 2, side, side, int(rng.integers(len(ROOFS))))]


def _draw_houses(labels: np.ndarray, houses: list[tuple[int, int, int, int, int]]) -> None:
    for y0, x0, h, w, _ in houses:
        labels[y0 + 3:y0 + h + 3, x0 + 3:x0 + w + 3] = SHADOW  # sun from the top left
    for y0, x0, h, w, roof in houses:
        lit, dark = ROOFS[roof]
        labels[y0:y0 + h, x0:x0 + w] = lit
        if w >= h:  # ridge along the long side: the far half is in shade
            labels[y0 + h // 2:y0 + h, x0:x0 + w] = dark
        else:
            labels[y0:y0 + h, x0 + w // 2:x0 + w] = dark


def _footprint(houses: list[tuple[int, int, int, int, int]], size: int, pad: int = 0) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    for y0, x0, h, w, _ in houses:
        mask[max(y0 - pad, 0):y0 + h + 3 + pad, max(x0 - pad, 0):x0 + w + 3 + pad] = True
    return mask


def _count(rng: np.random.Generator, several: bool = False) -> int:
    return int(rng.choice([2, 3, 3, 4, 4, 5, 6, 7, 8] if several else [1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8]))


def _majority_cover(labels: np.ndarray, mask: np.ndarray) -> str:
    counts = [int(np.sum(labels[mask] == lab)) for lab in (BARE, GRASS, TREES)]
    return ("bareland", "grass", "trees")[int(np.argmax(counts))]


#: Events that need a tile without the scene's roads (they draw their own road or a large pond).
ROAD_FREE = ("road_built", "road_extended", "road_and_buildings_built", "water_expanded", "water_receded")
#: Events that draw their own houses: no static houses in those tiles (counts stay exact).
_OWN_HOUSES = ("buildings_built", "buildings_demolished", "road_and_buildings_built",
               "vegetation_cleared_for_buildings")


def make_tile(rng: np.random.Generator, kind: str, size: int, scene: Scene | None = None,
              origin: tuple[int, int] = (0, 0)) -> Tile:
    """Draw a tile's land cover (the window at `origin` = (row, col) of `scene`) and apply event `kind`.

    Without a scene the tile is a scene of its own. Events in `ROAD_FREE` drop the scene's roads.
    """
    scene = scene or make_scene(rng, size, size)
    texture = np.stack([_noise(rng, size, 1.2), _noise(rng, size, 4.0), scene.grain.window(*origin, size)])
    base = _background(rng, scene, *origin, size)
    occupied = np.zeros((size, size), dtype=bool)
    facts: dict[str, Any] = {"type": kind}
    region = str(rng.choice(list(REGIONS)))
    keep_free = _region_mask(region, size)  # statics stay out of the event region
    road = None if kind in ROAD_FREE else scene.road(*origin, size)
    road_dist = None
    if road is not None:
        road_dist, road_label = road
        base[road_dist < 0] = road_label[road_dist < 0]
        occupied |= road_dist < 2
    if kind not in ("water_expanded", "water_receded", "road_and_buildings_built") and rng.random() < 0.12:
        q = _ellipse(rng, size, texture[2], [c for c in REGIONS if c != region and len(c) > 6])
        pond = (q < 1) & ~occupied & ~keep_free
        base[pond] = WATER
        occupied |= ndimage.binary_dilation(pond, iterations=2)
    if kind not in _OWN_HOUSES and rng.random() < (
            0.6 if road_dist is not None else 0.15):  # houses line the roads; a few farmsteads elsewhere
        near = (road_dist > 3) & (road_dist < 14) if road_dist is not None else np.ones_like(occupied)
        statics = _place_houses(rng, near & ~keep_free, occupied, int(rng.integers(1, 5)))
        _draw_houses(base, statics)
        occupied |= _footprint(statics, size, pad=2)
    before, after = base.copy(), base.copy()
    wobble = texture[2]

    if kind in ("buildings_built", "buildings_demolished"):
        allowed = _region_mask(region, size)
        near_road = road_dist is not None and rng.random() < 0.6
        if near_road:
            band = (road_dist > 3) & (road_dist < 14)
            allowed = band & allowed if (band & allowed).sum() > 200 else band
        houses = _event_houses(rng, allowed, occupied, _count(rng))
        foot = _footprint(houses, size, pad=2)
        if kind == "buildings_built":  # trees -> houses is `vegetation_cleared_for_buildings`
            cover = str(rng.choice(["bareland", "bareland", "grass"]))
            site = ndimage.binary_dilation(foot, iterations=4) & ~occupied
            before[site] = COVER_LABEL[cover]
            after[site] = COVER_LABEL[cover]
            after[foot & ~occupied] = GRASS if cover != "bareland" else BARE
            _draw_houses(after, houses)
        else:
            cover = "bareland"
            _draw_houses(before, houses)
            after[foot] = np.where(rng.random(int(foot.sum())) < 0.5, RUBBLE, BARE)
        facts.update(count=len(houses), cover=cover, near_road=bool(near_road))
    elif kind in ("road_built", "road_extended"):
        shapes = ["horizontal", "vertical"] + (["diagonal", "curved"] if kind == "road_built" else [])
        orientation = str(rng.choice(shapes))
        pts = _road_points(rng, size, orientation)
        width = float(rng.uniform(5, 10))
        material = str(rng.choice(["concrete", "asphalt"]))
        road = _polyline_distance(pts, size) < width / 2
        lab = CONCRETE if material == "concrete" else ASPHALT
        if kind == "road_built":
            if rng.random() < 0.3:  # a road cut through the woods
                before[ndimage.binary_dilation(road, iterations=12)] = TREES
                after[:] = before
            after[road] = lab
            facts.update(orientation=orientation, width=round(width, 1), material=material,
                         cover=_majority_cover(before, road))
        else:
            forward = rng.random() < 0.5  # grows along the polyline direction (right / down) or back
            cut = rng.uniform(0.3, 0.55) * size
            along = pts[0, 0] if orientation == "horizontal" else pts[0, 1]
            yy, xx = _grid(size)
            coord = xx if orientation == "horizontal" else yy
            old = road & ((coord < along + cut + 6) if forward else (coord > size - cut - 6))
            before[old] = lab
            after[road] = lab
            direction = {("horizontal", True): "right", ("horizontal", False): "left",
                         ("vertical", True): "down", ("vertical", False): "up"}[(orientation, forward)]
            facts.update(direction=direction, width=round(width, 1), material=material,
                         cover=_majority_cover(before, road & ~old))
    elif kind == "road_and_buildings_built":
        facts.update(_road_and_buildings(rng, before, after, occupied, region))
    elif kind == "vegetation_cleared_for_buildings":
        facts.update(_clearing_for_buildings(rng, before, after, occupied, region, wobble))
    elif kind in ("vegetation_cleared", "vegetation_grown"):
        patch = _region_mask(region, size, wobble) & ~occupied
        if kind == "vegetation_cleared":
            before[patch] = TREES
            after[patch & (texture[1] < 1.8)] = BARE
        else:
            grown = str(rng.choice(["trees", "grass"]))
            before[patch] = BARE
            after[patch] = TREES if grown == "trees" else GRASS
            facts["vegetation"] = grown
    elif kind in ("water_expanded", "water_receded"):
        q = _ellipse(rng, size, wobble, [region], scale=0.1)
        small, big = q < 1.0, q < float(rng.uniform(2.4, 3.6))
        first, second = (small, big) if kind == "water_expanded" else (big, small)
        before[first & ~occupied] = WATER
        after[second & ~occupied] = WATER
        if kind == "water_receded":
            after[big & ~small & ~occupied] = WETSOIL
        facts["place"] = place_of_mask(big & ~occupied)  # where the pond is, not just its rim
    mask = before != after
    if kind != "none" and "place" not in facts:
        facts["place"] = place_of_mask(mask)
    return Tile(before=before, after=after, texture=texture, mask=mask, facts=facts)


def _road_and_buildings(rng: np.random.Generator, before: np.ndarray, after: np.ndarray,
                        occupied: np.ndarray, region: str) -> dict[str, Any]:
    """A new road with several houses along it, on bare land or on cleared trees (edits the maps)."""
    size = before.shape[0]
    orientation = str(rng.choice(["horizontal", "vertical", "diagonal", "curved"]))
    pts = _road_points(rng, size, orientation)
    width = float(rng.uniform(5, 9))
    material = str(rng.choice(["concrete", "asphalt"]))
    dist = _polyline_distance(pts, size) - width / 2
    road = dist < 0
    band = (dist > 7) & (dist < 17)  # house centres: lots front the road, a verge in between
    side = band & _region_mask(region, size)  # often one side of the road only
    allowed = side if side.sum() > 200 else band
    houses = _event_houses(rng, allowed, occupied | (dist < 2), _count(rng, several=True))
    foot = _footprint(houses, size)
    cover = str(rng.choice(["bareland", "bareland", "trees"]))
    site = ndimage.binary_dilation(road | foot, iterations=6) & ~occupied
    before[site] = COVER_LABEL[cover]
    after[site] = BARE  # the building site: bare either way, trees are cleared
    after[road] = CONCRETE if material == "concrete" else ASPHALT
    _draw_houses(after, houses)
    return {"count": len(houses), "cover": cover, "near_road": True, "orientation": orientation,
            "width": round(width, 1), "material": material, "place": place_of_mask(foot)}


def _clearing_for_buildings(rng: np.random.Generator, before: np.ndarray, after: np.ndarray,
                            occupied: np.ndarray, region: str, wobble: np.ndarray) -> dict[str, Any]:
    """Trees in one part of the tile are cut down and houses are built in the clearing (edits the maps)."""
    patch = _region_mask(region, before.shape[0], wobble) & ~occupied
    inner = ndimage.binary_erosion(patch, iterations=6)  # houses stand inside the clearing
    houses = _event_houses(rng, inner if inner.sum() > 50 else patch, occupied, _count(rng, several=True))
    before[patch] = TREES
    after[patch] = BARE
    _draw_houses(after, houses)
    return {"count": len(houses), "cover": "trees"}


def _ellipse(rng: np.random.Generator, size: int, wobble: np.ndarray, regions: list[str],
             scale: float = 0.14) -> np.ndarray:
    """Normalised radius field of an irregular ellipse centred in one of `regions` (pond < 1)."""
    x0, y0, x1, y1 = REGIONS[str(rng.choice(regions))]
    cx, cy = (x0 + x1) / 2 * size, (y0 + y1) / 2 * size
    rx, ry = (rng.uniform(0.75, 1.25, size=2) * scale * size)
    yy, xx = _grid(size)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 + 0.25 * wobble


def date_radiometry(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two acquisitions: per-date spectra (gain, season vigour of vegetation), offset and noise level."""
    out = []
    for _ in range(2):
        spectra = SPECTRA * rng.normal(1.0, 0.02, 4).astype(np.float32)
        vigour = np.float32(rng.uniform(0.95, 1.05))
        spectra[np.ix_(_VEGETATION, [1, 3])] *= vigour
        out.append({"spectra": spectra, "offset": rng.normal(0.0, 0.008, 4).astype(np.float32),
                    "noise": float(rng.uniform(0.006, 0.010))})
    return out[0], out[1]


def render(labels: np.ndarray, texture: np.ndarray, radiometry: dict[str, Any],
           rng: np.random.Generator) -> np.ndarray:
    """Label map -> uint8 H x W x 4 (red, green, blue, nir) with texture, date radiometry and noise."""
    mod = 1.0 + np.einsum("hwk,khw->hw", _AMP[labels], texture)
    mod[(labels == TREES) & (texture[0] < -1.1)] *= 0.55  # dark gaps between tree crowns
    img = radiometry["spectra"][labels] * mod[..., None]
    img += radiometry["offset"]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(radiometry["noise"])
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """RGB uint8 PNG (fast compression: the world folder is written atomically as a whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="PNG", compress_level=1,
                                                    compress_type=zlib.Z_RLE)  # faster and smaller here
