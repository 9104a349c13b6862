"""Spectral change description: what NDVI, NDWI, NDBI and brightness say changed between two dates.

Used by the inspector (statistics) and to pseudo-caption archives without captions (the sentence).
It needs NIR and red (NDVI); green+NIR adds water (NDWI, McFeeters), SWIR1+NIR adds built-up/bare
(NDBI). RGB-only imagery gives None: true colour alone cannot separate these changes reliably.
Indices are ratios, so they are meaningful on pixels scaled with one gain per scene (the loaders'
default); a per-band percentile stretch distorts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from textitsr.data.pairs import BitemporalPair


@dataclass(frozen=True)
class ChangeThresholds:
    """Per-pixel thresholds that decide what counts as a change, and when a fraction is worth saying."""

    ndvi_change: float = 0.2  #: NDVI drop/rise counted as vegetation loss/gain ...
    vegetation_ndvi: float = 0.3  #: ... of a pixel vegetated before (loss) / after (gain)
    water_ndwi: float = 0.2  #: NDWI above this is water (0.2 keeps moist bare soil in 8-bit NAIP out)
    ndbi_change: float = 0.2  #: NDBI rise/drop counted as built-up/bare gain/loss
    brightness_change: float = 0.08  #: mean brightness delta worth mentioning
    min_fraction: float = 0.02  #: fractions below this are reported as "unchanged"


DEFAULT_THRESHOLDS = ChangeThresholds()


def _index(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised difference (a - b) / (a + b) and where it is defined."""
    den = a + b
    ok = den > 1e-6
    out = np.zeros_like(a, dtype=np.float32)
    np.divide(a - b, den, out=out, where=ok)
    return out, ok


def change_stats(
    pair: BitemporalPair, thresholds: ChangeThresholds = DEFAULT_THRESHOLDS
) -> dict[str, float] | None:
    """Spectral change statistics of a pair, or None when it has no NIR + red bands.

    Keys: ndvi_before, ndvi_after, ndvi_delta (means), vegetation_loss, vegetation_gain (fractions of
    valid pixels, vegetated before/after, whose NDVI fell/rose by more than the threshold); with green:
    ndwi_delta, water_before, water_after, water_gain, water_loss; with SWIR1: ndbi_delta, built_gain,
    built_loss; always: brightness_before, brightness_after, brightness_delta (visible bands, or all).
    """
    if not {"nir", "red"} <= set(pair.bands):
        return None
    t = thresholds

    def band(when: str, name: str) -> np.ndarray:
        return pair.band(when, name).astype(np.float32)

    ndvi_b, ok_b = _index(band("before", "nir"), band("before", "red"))
    ndvi_a, ok_a = _index(band("after", "nir"), band("after", "red"))
    valid = ok_b & ok_a
    n = max(int(valid.sum()), 1)
    d = ndvi_a - ndvi_b
    stats: dict[str, float] = {
        "ndvi_before": float(ndvi_b[valid].mean()) if valid.any() else 0.0,
        "ndvi_after": float(ndvi_a[valid].mean()) if valid.any() else 0.0,
        "ndvi_delta": float(d[valid].mean()) if valid.any() else 0.0,
        "vegetation_loss": float((valid & (d < -t.ndvi_change) & (ndvi_b > t.vegetation_ndvi)).sum() / n),
        "vegetation_gain": float((valid & (d > t.ndvi_change) & (ndvi_a > t.vegetation_ndvi)).sum() / n),
    }
    if "green" in pair.bands:
        ndwi_b, okw_b = _index(band("before", "green"), band("before", "nir"))
        ndwi_a, okw_a = _index(band("after", "green"), band("after", "nir"))
        v = okw_b & okw_a
        m = max(int(v.sum()), 1)
        wb, wa = v & (ndwi_b > t.water_ndwi), v & (ndwi_a > t.water_ndwi)
        stats |= {
            "ndwi_delta": float((ndwi_a - ndwi_b)[v].mean()) if v.any() else 0.0,
            "water_before": float(wb.sum() / m),
            "water_after": float(wa.sum() / m),
            "water_gain": float((wa & ~wb).sum() / m),
            "water_loss": float((wb & ~wa).sum() / m),
        }
    if "swir1" in pair.bands:
        ndbi_b, okb_b = _index(band("before", "swir1"), band("before", "nir"))
        ndbi_a, okb_a = _index(band("after", "swir1"), band("after", "nir"))
        v = okb_b & okb_a
        m = max(int(v.sum()), 1)
        db = ndbi_a - ndbi_b
        stats |= {
            "ndbi_delta": float(db[v].mean()) if v.any() else 0.0,
            "built_gain": float((v & (db > t.ndbi_change)).sum() / m),
            "built_loss": float((v & (db < -t.ndbi_change)).sum() / m),
        }
    visible = [b for b in ("red", "green", "blue") if b in pair.bands] or list(pair.bands)
    idx = [pair.bands.index(b) for b in visible]
    stats["brightness_before"] = float(pair.before[..., idx].mean())
    stats["brightness_after"] = float(pair.after[..., idx].mean())
    stats["brightness_delta"] = stats["brightness_after"] - stats["brightness_before"]
    return stats


def _about(fraction: float) -> str:
    """'about 30%' (nearest 5% from 10% up, nearest 1% below)."""
    pct = fraction * 100
    value = round(pct / 5) * 5 if pct >= 10 else max(1, round(pct))
    return f"about {value}%"


def describe_change(pair: BitemporalPair, thresholds: ChangeThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """One short sentence, e.g. "vegetation decreased over about 30% of the tile; water unchanged".

    None when the bands do not allow it (see `change_stats`).
    """
    stats = change_stats(pair, thresholds)
    if stats is None:
        return None
    t = thresholds
    veg = (("decreased over", stats["vegetation_loss"]), ("increased over", stats["vegetation_gain"]))
    parts = [_two_way("vegetation", *veg, t.min_fraction)]
    if "water_gain" in stats:
        water = (("appeared over", stats["water_gain"]), ("receded from", stats["water_loss"]))
        parts.append(_two_way("water", *water, t.min_fraction))
    if "built_gain" in stats and stats["built_gain"] >= t.min_fraction:
        # NDBI rises on bare soil as on roofs: say what was measured, not "built" (a clearing shows here).
        parts.append(f"the bare/built-up index rose over {_about(stats['built_gain'])} of the tile")
    if abs(stats["brightness_delta"]) >= t.brightness_change:
        parts.append("the scene became " + ("brighter" if stats["brightness_delta"] > 0 else "darker"))
    return "; ".join(parts)


def _two_way(
    subject: str, first: tuple[str, float], second: tuple[str, float], min_fraction: float
) -> str:
    """'water appeared over about 10% and receded from about 5% of the tile', either half, or 'unchanged'."""
    said = [f"{verb} {_about(f)}" for verb, f in (first, second) if f >= min_fraction]
    return f"{subject} {' and '.join(said)} of the tile" if said else f"{subject} unchanged"

