"""Pair footprints (a GeoJSON FeatureCollection of lon/lat polygons) as geometry.

One bbox convention throughout: (west, south, east, north) in degrees, as leafmap's
`zoom_to_bounds` takes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Bounds = tuple[float, float, float, float]


def box_polygon(bounds: Bounds) -> dict[str, Any]:
    """A GeoJSON Polygon of a (west, south, east, north) box."""
    w, s, e, n = bounds
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def box_features(boxes: Mapping[str, Bounds]) -> dict[str, Any]:
    """A FeatureCollection of pair_id -> box footprints."""
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"pair_id": pid}, "geometry": box_polygon(box)}
        for pid, box in boxes.items()
    ]}


def rings(geometry: Mapping[str, Any]) -> list[list[tuple[float, float]]]:
    """Outer rings (lon, lat) of a Polygon / MultiPolygon geometry."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates") or []
    if kind == "Polygon":
        return [[(float(x), float(y)) for x, y, *_ in coords[0]]] if coords else []
    if kind == "MultiPolygon":
        return [[(float(x), float(y)) for x, y, *_ in poly[0]] for poly in coords if poly]
    return []


def _point_in_ring(x: float, y: float, ring: Sequence[tuple[float, float]]) -> bool:
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def ring_bbox(ring: Sequence[tuple[float, float]]) -> Bounds:
    xs, ys = zip(*ring, strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def union(boxes: Sequence[Bounds]) -> Bounds:
    """The smallest box holding every box (at least one)."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes))


def _overlap(a: Bounds, b: Bounds) -> float:
    w, s = max(a[0], b[0]), max(a[1], b[1])
    e, n = min(a[2], b[2]), min(a[3], b[3])
    return max(0.0, e - w) * max(0.0, n - s)


def _area(b: Bounds) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def pair_at_point(lon: float, lat: float, footprints: Mapping[str, Any]) -> str | None:
    """The pair whose footprint contains (lon, lat); the smallest one when footprints overlap."""
    best: tuple[float, str] | None = None
    for feat in footprints.get("features", []):
        pid = (feat.get("properties") or {}).get("pair_id")
        for ring in rings(feat.get("geometry") or {}):
            if pid is not None and _point_in_ring(lon, lat, ring):
                area = _area(ring_bbox(ring))
                if best is None or area < best[0]:
                    best = (area, str(pid))
    return best[1] if best else None


def pair_in_box(box: Bounds, footprints: Mapping[str, Any]) -> str | None:
    """The pair whose footprint overlaps `box` most (ties: nearest centre); None when none overlaps."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    best: tuple[float, float, str] | None = None
    for feat in footprints.get("features", []):
        pid = (feat.get("properties") or {}).get("pair_id")
        for ring in rings(feat.get("geometry") or {}):
            fb = ring_bbox(ring)
            ov = _overlap(box, fb)
            if pid is None or ov <= 0:
                continue
            dist = math.hypot((fb[0] + fb[2]) / 2 - cx, (fb[1] + fb[3]) / 2 - cy)
            key = (-ov, dist, str(pid))
            if best is None or key < best:
                best = key
    return best[2] if best else None


def footprints_bounds(footprints: Mapping[str, Any]) -> Bounds | None:
    """Bounding box of all footprints, or None for an empty collection."""
    boxes = [ring_bbox(r) for f in footprints.get("features", []) for r in rings(f.get("geometry") or {})]
    return union(boxes) if boxes else None


def feature_bounds(footprints: Mapping[str, Any]) -> dict[str, Bounds]:
    """pair_id -> bounding box of its footprint."""
    out: dict[str, Bounds] = {}
    for feat in footprints.get("features", []):
        pid = (feat.get("properties") or {}).get("pair_id")
        found = rings(feat.get("geometry") or {})
        if pid is not None and found:
            out[str(pid)] = ring_bbox(found[0])
    return out


@dataclass(frozen=True)
class Cluster:
    """A group of neighbouring footprints (one scene, one town): where the map should look."""

    bounds: Bounds
    n_pairs: int

    @property
    def center(self) -> tuple[float, float]:
        """(lat, lon) of the centre."""
        return ((self.bounds[1] + self.bounds[3]) / 2, (self.bounds[0] + self.bounds[2]) / 2)


def footprint_clusters(footprints: Mapping[str, Any], gap_tiles: float = 4.0) -> list[Cluster]:
    """Footprints grouped by proximity (a grid of `gap_tiles` median tile sizes), largest first.

    Archives are usually a few dense scenes far apart; fitting the map to all of them shows specks.
    """
    boxes = list(feature_bounds(footprints).values())
    if not boxes:
        return []
    size = float(np.median([max(b[2] - b[0], b[3] - b[1]) for b in boxes])) or 1e-6
    cell = size * gap_tiles
    keys = [(math.floor((b[0] + b[2]) / 2 / cell), math.floor((b[1] + b[3]) / 2 / cell)) for b in boxes]
    parent: dict[tuple[int, int], tuple[int, int]] = {k: k for k in keys}

    def find(k: tuple[int, int]) -> tuple[int, int]:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for kx, ky in list(parent):
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                other = (kx + dx, ky + dy)
                if other in parent:
                    parent[find(other)] = find((kx, ky))
    groups: dict[tuple[int, int], list[Bounds]] = {}
    for key, box in zip(keys, boxes, strict=True):
        groups.setdefault(find(key), []).append(box)
    clusters = [Cluster(union(g), len(g)) for g in groups.values()]
    return sorted(clusters, key=lambda c: (-c.n_pairs, c.bounds))
