"""Spectral change description: hand-made arrays with known answers, and real NAIP pairs (with NIR)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from textitsr.data.describe import change_stats, describe_change
from textitsr.data.geotiff import GeoTiffSource
from textitsr.data.pairs import BitemporalPair

BANDS = ("red", "green", "blue", "nir")
VEG = (0.05, 0.10, 0.05, 0.50)  # red, green, blue, nir
BARE = (0.30, 0.28, 0.25, 0.35)
WATER = (0.04, 0.12, 0.10, 0.02)


def tile(fill, patches=()):
    """10 x 10 x 4 tile of one cover, with (rows, cover) patches painted over it."""
    img = np.empty((10, 10, 4), dtype=np.float32)
    img[:] = fill
    for rows, cover in patches:
        img[rows] = cover
    return img


def pair(before, after, bands=BANDS):
    return BitemporalPair("t", before, after, bands=bands, display_bands=("red", "green", "blue"))


def test_vegetation_cleared_on_30_percent():
    p = pair(tile(VEG), tile(VEG, [(slice(0, 3), BARE)]))
    s = change_stats(p)
    assert s["vegetation_loss"] == pytest.approx(0.30) and s["vegetation_gain"] == 0.0
    assert s["water_gain"] == 0.0 and s["water_loss"] == 0.0
    assert s["ndvi_delta"] < 0 and s["brightness_delta"] > 0
    assert describe_change(p) == "vegetation decreased over about 30% of the tile; water unchanged"


def test_water_appears_and_vegetation_grows():
    before = tile(BARE)
    after = tile(BARE, [(slice(0, 2), WATER), (slice(5, 10), VEG)])
    s = change_stats(pair(before, after))
    assert s["water_gain"] == pytest.approx(0.20) and s["water_before"] == 0.0
    assert s["vegetation_gain"] == pytest.approx(0.50)
    text = describe_change(pair(before, after))
    assert text.startswith("vegetation increased over about 50% of the tile")
    assert "water appeared over about 20% of the tile" in text
    back = describe_change(pair(after, before))
    assert "water receded from about 20% of the tile" in back and "vegetation decreased" in back


def test_no_change_and_swir_built_up():
    p = pair(tile(VEG), tile(VEG))
    assert describe_change(p) == "vegetation unchanged; water unchanged"
    bands = ("swir1", "nir", "red", "green")
    veg, built = (0.15, 0.50, 0.05, 0.10), (0.45, 0.25, 0.30, 0.28)
    img_b = np.empty((4, 5, 4), dtype=np.float32)
    img_b[:] = veg
    img_a = img_b.copy()
    img_a[:1] = built  # 25%
    s = change_stats(BitemporalPair("l", img_b, img_a, bands=bands, display_bands=("swir1", "nir", "red")))
    assert s["built_gain"] == pytest.approx(0.25) and s["ndbi_delta"] > 0
    assert "the bare/built-up index rose over about 25% of the tile" in describe_change(
        BitemporalPair("l", img_b, img_a, bands=bands, display_bands=("swir1", "nir", "red"))
    )


def test_rgb_only_gives_none():
    rgb = np.zeros((4, 4, 3), dtype=np.float32)
    p = BitemporalPair("rgb", rgb, rgb)
    assert change_stats(p) is None and describe_change(p) is None


def test_real_naip_pairs():
    files = sorted(shared_path("geo", "naip").glob("*.tif"))
    src = GeoTiffSource([files[0], files[9]], tile_size=256)
    pairs = list(src.pairs())
    for p in pairs:
        s = change_stats(p)
        assert -1 <= s["ndvi_before"] <= 1 and -1 <= s["ndvi_delta"] <= 1
        for key in ("vegetation_loss", "vegetation_gain", "water_gain", "water_loss"):
            assert 0.0 <= s[key] <= 1.0
        text = describe_change(p)
        assert text.startswith("vegetation ") and "water" in text
    # farmland in North Dakota: the mean NDVI of a summer scene is positive (real NIR, not RGB)
    assert np.mean([change_stats(p)["ndvi_before"] for p in pairs]) > 0.05
    rgb_only = GeoTiffSource([files[0], files[9]], tile_size=256, bands=("red", "green", "blue"))
    assert describe_change(next(iter(rgb_only.pairs()))) is None
