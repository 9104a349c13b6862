"""GeoTIFF series -> tile pairs: real NAIP/Landsat scenes, plus hand-written scenes for the edge cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared_path
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

from textitsr.data.geotiff import GeoTiffSource
from textitsr.data.scenes import _parse_date
from textitsr.errors import InputError

UTM14 = "EPSG:26914"


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: str | None = UTM14,
    transform: Affine | None = None,
    nodata: float | None = None,
    tags: dict | None = None,
) -> Path:
    """Write a (bands, h, w) array as a GeoTIFF."""
    count, h, w = data.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype=data.dtype.name,
        transform=transform or Affine(5.0, 0, 485900.0, 0, -5.0, 5209250.0),
        nodata=nodata,
    )
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def naip_files() -> list[Path]:
    return sorted(shared_path("geo", "naip").glob("*.tif"))


@pytest.fixture(scope="module")
def naip3(naip_files) -> GeoTiffSource:
    return GeoTiffSource(naip_files[:3])


@pytest.fixture(scope="module")
def naip3_pairs(naip3):
    return list(naip3.pairs())


# ----------------------------------------------------------------------------------- real data
def test_naip_series_tiles_ids_dates(naip3, naip3_pairs):
    # 3 dates -> 2 consecutive pairs; common grid 932 x 722 px -> 4 x 3 tiles of 256 px (the last
    # column and row flush with the grid's edge, overlapping their neighbours).
    assert [s.date for s in naip3.scenes] == ["2009-08-18", "2010-06-29", "2012-07-31"]
    assert (naip3.tile_rows, naip3.tile_cols) == (3, 4)
    assert len(naip3_pairs) == len(naip3) == 24
    first = naip3_pairs[0]
    assert first.pair_id == "m_4709963_se_14_1_20090818_20100629_r0_c0"
    assert naip3_pairs[-1].pair_id == "m_4709963_se_14_1_20100629_20120731_r2_c3"
    assert len({p.pair_id for p in naip3_pairs}) == 24
    assert first.dates == ("2009-08-18", "2010-06-29")
    assert first.bands == ("red", "green", "blue", "nir") and first.display_bands == ("red", "green", "blue")
    assert first.before.shape == (256, 256, 4) and first.before.dtype == np.float32
    assert 0.0 <= first.before.min() and first.after.max() <= 1.0
    assert first.crs == UTM14 and first.split is None


def test_naip_bounds_are_lonlat_in_north_dakota_and_inside_every_scene(naip3, naip3_pairs):
    scene_boxes = []
    for s in naip3.scenes:
        with rasterio.open(s.path) as src:
            scene_boxes.append(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    for p in naip3_pairs:
        w, s_, e, n = p.bounds
        assert -99.2 < w < e < -99.1 and 47.0 < s_ < n < 47.05
        for sw, ss, se, sn in scene_boxes:  # no tile outside any scene
            assert sw - 1e-9 <= w and e <= se + 1e-9 and ss - 1e-9 <= s_ and n <= sn + 1e-9
        nw, ns, ne, nn = p.native_bounds
        assert ne - nw == pytest.approx(256 * 5.0) and nn - ns == pytest.approx(256 * 5.0)
    # neighbouring tiles share an edge: c0's east is c1's west (native metres)
    by_id = {p.pair_id: p for p in naip3_pairs}
    a = by_id["m_4709963_se_14_1_20090818_20100629_r0_c0"]
    b = by_id["m_4709963_se_14_1_20090818_20100629_r0_c1"]
    assert a.native_bounds[2] == pytest.approx(b.native_bounds[0])


def test_naip_pairing_all_and_chosen(naip_files):
    src = GeoTiffSource(naip_files[:3], pairing="all", tile_size=512)
    assert (src.tile_rows, src.tile_cols) == (2, 2)  # 932 x 722 px: second row/column flush with the edge
    assert [p.pair_id for p in src.pairs() if p.pair_id.endswith("_r0_c0")] == [
        "m_4709963_se_14_1_20090818_20100629_r0_c0",
        "m_4709963_se_14_1_20090818_20120731_r0_c0",
        "m_4709963_se_14_1_20100629_20120731_r0_c0",
    ]
    chosen = GeoTiffSource(naip_files, pairing=[(0, 9)], tile_size=512)
    assert {p.dates for p in chosen.pairs()} == {("2009-08-18", "2020-08-31")}
    with pytest.raises(InputError, match="scene indices"):
        GeoTiffSource(naip_files[:2], pairing=[(0, 5)])


def test_each_tile_date_is_read_once_with_the_same_pairs(naip_files, monkeypatch):
    """With pairing "all" a scene's tile sits in n-1 pairs; it is read and warped once."""
    import textitsr.data.geotiff as geotiff

    reads: list[tuple] = []
    real_read = GeoTiffSource._read

    def counted(self, vrt, scene, window):
        reads.append((scene.path, window))
        return real_read(self, vrt, scene, window)

    monkeypatch.setattr(GeoTiffSource, "_read", counted)
    src = GeoTiffSource(naip_files[:3], pairing="all")
    tiles = src.tile_rows * src.tile_cols
    cached = list(src.pairs())
    assert len(cached) == 3 * tiles and len(reads) == len(set(reads)) == 3 * tiles  # 6 images a tile
    monkeypatch.setattr(geotiff, "TILE_CACHE_BYTES", 0)
    reads.clear()
    uncached = list(src.pairs())
    assert len(reads) == 6 * tiles
    assert [p.pair_id for p in cached] == [p.pair_id for p in uncached]
    for c, u in zip(cached, uncached, strict=True):
        np.testing.assert_array_equal(c.before, u.before)
        np.testing.assert_array_equal(c.after, u.after)
        assert c.location == u.location
    one_read = 256 * 256 * 5  # 4 uint8 bands + the validity mask
    monkeypatch.setattr(geotiff, "TILE_CACHE_BYTES", 2 * tiles * one_read)  # two scenes' tiles
    reads.clear()
    assert [p.pair_id for p in src.pairs()] == [p.pair_id for p in cached]
    assert 3 * tiles < len(reads) < 6 * tiles  # least recently used dropped, read again when needed


def test_landsat_false_colour_series():
    files = sorted(shared_path("geo", "landsat").glob("*.tif"))
    src = GeoTiffSource(files, band_names=("SWIR1", "NIR", "Red", "Green"), tile_size=128, pairing=[(0, 7)])
    assert src.place == "landsat" and src.display == ("swir1", "nir", "red")
    assert (src.tile_rows, src.tile_cols) == (3, 6)  # 697 x 377 px, edge tiles flush with the edges
    pairs = list(src.pairs())
    assert len(pairs) == 18 and pairs[0].pair_id == "landsat_1985_2020_r0_c0"
    assert pairs[0].crs == "EPSG:4326" and pairs[0].dates == ("1985-01-01", "2020-01-01")
    for p in pairs:
        w, s, e, n = p.bounds
        assert -74.7225 - 1e-6 <= w < e <= -74.1589 and -8.587 <= s < n <= -8.2821 + 1e-6
    assert pairs[0].rgb("before").shape == (128, 128, 3)
    with pytest.raises(InputError, match="blue"):
        GeoTiffSource(files[:2], band_names=("swir1", "nir", "red", "green"), display="rgb")


def test_reprojected_copy_is_warped_onto_the_common_grid(tmp_path, naip_files):
    """A scene paired with a copy of itself in EPSG:4326 must come back aligned pixel for pixel."""
    orig = naip_files[0]
    copy = tmp_path / "m_4709963_se_14_1_20210101.tif"
    with rasterio.open(orig) as src:
        transform, w, h = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
        dst_data = np.zeros((src.count, h, w), dtype=np.uint8)
        reproject(
            src.read(),
            dst_data,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:4326",
            resampling=Resampling.bilinear,
            src_nodata=0,
            dst_nodata=0,
        )
    write_tif(copy, dst_data, crs="EPSG:4326", transform=transform, nodata=0)
    src = GeoTiffSource([copy, orig], tile_size=128, max_nodata=0.0)
    assert src.scenes[0].path == orig  # ordered by date: the original defines the grid
    assert src.grid.crs.to_epsg() == 26914
    pairs = list(src.pairs())
    assert len(pairs) >= 10
    for p in pairs:
        diff = np.abs(p.before - p.after).mean()
        corr = np.corrcoef(p.before[..., 3].ravel(), p.after[..., 3].ravel())[0, 1]
        assert diff < 0.03 and corr > 0.9, p.pair_id
    # and with the reprojected scene as the reference the grid is in lon/lat
    src2 = GeoTiffSource([orig, copy], tile_size=128, reference=1)
    assert src2.grid.crs.to_epsg() == 4326
    assert next(iter(src2.pairs())).crs == "EPSG:4326"


def test_parse_date_from_names():
    assert _parse_date("m_4709963_se_14_1_20120731") == ("2012-07-31", "20120731")
    assert _parse_date("1985") == ("1985-01-01", "1985")
    assert _parse_date("scene_2019-09-04_x") == ("2019-09-04", "20190904")
    assert _parse_date("m_4709963_se_14_1") is None


def test_date_from_tiff_tag_and_undated(tmp_path):
    data = np.full((3, 32, 32), 100, dtype=np.uint8)
    a = write_tif(tmp_path / "alpha.tif", data, tags={"TIFFTAG_DATETIME": "2012:07:31 10:00:00"})
    b = write_tif(tmp_path / "beta.tif", data, tags={"ACQUISITION_DATE": "2015-06-01"})
    src = GeoTiffSource([b, a], tile_size=16)
    assert [s.date for s in src.scenes] == ["2012-07-31", "2015-06-01"]
    assert next(iter(src.pairs())).pair_id.endswith("20120731_20150601_r0_c0")


# --------------------------------------------------------------------------------- scaling, bands
def test_16bit_scaled_per_scene_not_per_tile(tmp_path):
    """uint16 data: one gain per scene, so equal raw values map to equal outputs in every tile."""
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 100, (64, 1))  # 0..6300 left to right
    before = np.stack([ramp, ramp, ramp, ramp * 2])
    after = np.stack([ramp, ramp, ramp, ramp])
    a = write_tif(tmp_path / "s_20200101.tif", before)
    b = write_tif(tmp_path / "s_20210101.tif", after)
    src = GeoTiffSource([a, b], tile_size=32)
    pairs = {p.pair_id: p for p in src.pairs()}
    assert len(pairs) == 4
    for p in pairs.values():
        assert p.before.dtype == np.float32 and 0.0 <= p.before.min() and p.before.max() <= 1.0
    left, right = pairs["s_20200101_20210101_r0_c0"], pairs["s_20200101_20210101_r0_c1"]
    assert left.before[0, 31, 0] < right.before[0, 0, 0]  # 3100 < 3200, same scale across tiles
    # the gain keeps band ratios: NIR is twice red in the 'before' scene wherever not clipped
    px = left.before[0, 10]
    assert px[3] == pytest.approx(2 * px[0], rel=1e-4)


def test_one_band_scenes_are_grey(tmp_path):
    data = (np.arange(32 * 32, dtype=np.uint16).reshape(1, 32, 32) % 251).astype(np.uint8)
    a = write_tif(tmp_path / "p_2001.tif", data)
    b = write_tif(tmp_path / "p_2002.tif", data)
    pair = next(iter(GeoTiffSource([a, b], tile_size=32).pairs()))
    assert pair.bands == ("gray",) and pair.display_bands == ("gray", "gray", "gray")
    assert pair.rgb("before").shape == (32, 32, 3)
    with pytest.raises(InputError, match=r"p_2001.tif.*1 band"):
        GeoTiffSource([a, b], bands=("red", "green", "blue"))


def test_band_subset_and_nodata_tiles_skipped(tmp_path):
    data = np.full((4, 64, 64), 120, dtype=np.uint8)
    holes = data.copy()
    holes[:, :32, :32] = 0  # top-left tile is nodata in the second date
    a = write_tif(tmp_path / "q_2001.tif", data, nodata=0)
    b = write_tif(tmp_path / "q_2002.tif", holes, nodata=0)
    src = GeoTiffSource([a, b], tile_size=32, bands=("red", "green", "blue"))
    ids = [p.pair_id for p in src.pairs()]
    assert ids == ["q_2001_2002_r0_c1", "q_2001_2002_r1_c0", "q_2001_2002_r1_c1"]
    flagged = {p.pair_id: p for p in GeoTiffSource([a, b], tile_size=32, max_nodata=1.0).pairs()}
    assert flagged["q_2001_2002_r0_c0"].location["nodata_fraction"] == 1.0
    assert next(iter(src.pairs())).before.shape == (32, 32, 3)


# ------------------------------------------------------------------------------------ bad input
def test_non_overlapping_scenes(tmp_path, naip_files):
    data = np.full((4, 64, 64), 100, dtype=np.uint8)
    a = write_tif(tmp_path / "a_2001.tif", data)
    b = write_tif(tmp_path / "b_2002.tif", data, transform=Affine(5.0, 0, 600000.0, 0, -5.0, 5209250.0))
    with pytest.raises(InputError, match=r"b_2002.tif: does not overlap"):
        GeoTiffSource([a, b])


def test_unknown_crs(tmp_path):
    data = np.full((3, 32, 32), 100, dtype=np.uint8)
    a = write_tif(tmp_path / "a_2001.tif", data)
    b = write_tif(tmp_path / "b_2002.tif", data, crs=None)
    with pytest.raises(InputError, match=r"b_2002.tif: has no coordinate reference system"):
        GeoTiffSource([a, b])


def test_corrupt_and_non_geotiff_files(tmp_path, naip_files):
    bad = tmp_path / "broken_2002.tif"
    bad.write_bytes(b"II*\x00 this is not really a tiff")
    with pytest.raises(InputError, match=r"broken_2002.tif: not a readable GeoTIFF"):
        GeoTiffSource([naip_files[0], bad])
    png = tmp_path / "photo_2003.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(png)
    with pytest.raises(InputError, match=r"photo_2003.png"):
        GeoTiffSource([naip_files[0], png])


def test_missing_file_mismatched_bands_and_too_few_scenes(tmp_path, naip_files):
    with pytest.raises(InputError, match=r"nope_2001.tif: GeoTIFF file not found"):
        GeoTiffSource([naip_files[0], tmp_path / "nope_2001.tif"])
    three = write_tif(tmp_path / "rgb_2030.tif", np.full((3, 64, 64), 9, dtype=np.uint8))
    with pytest.raises(InputError, match=r"rgb_2030.tif: bands .* differ"):
        GeoTiffSource([naip_files[0], three])
    with pytest.raises(InputError, match="at least two"):
        GeoTiffSource([naip_files[0]])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .tif"):
        GeoTiffSource(tmp_path / "empty")
    folder = tmp_path / "series"
    folder.mkdir()
    for f in naip_files[:2]:
        shutil.copy(f, folder / f.name)
    with pytest.raises(InputError, match="smaller than one"):
        GeoTiffSource(folder, tile_size=4096)


def test_tiles_cover_the_whole_grid_with_edge_tiles_flush():
    from textitsr.data.geotiff import tile_offsets

    assert tile_offsets(512, 256, 256) == [0, 256]
    assert tile_offsets(511, 256, 256) == [0, 255]  # a sub-pixel shrink no longer loses a column
    assert tile_offsets(697, 128, 128) == [0, 128, 256, 384, 512, 569]
    assert tile_offsets(600, 256, 200) == [0, 200, 344]
    assert tile_offsets(255, 256, 256) == []


def test_the_shipped_naip_crop_is_searchable_everywhere():
    """The demo's NAIP dates are offset by a few metres (a 511 px common grid): every grid pixel lies
    in a tile, and the last row and column stay inside the grid."""
    files = sorted((Path(__file__).parents[1] / "data" / "real-scenes" / "naip").glob("*.tif"))[:2]
    src = GeoTiffSource(files)
    covered = np.zeros((src.grid.height, src.grid.width), bool)
    for row in range(src.tile_rows):
        for col in range(src.tile_cols):
            win = src.tile_window(row, col)
            assert win.col_off + win.width <= src.grid.width and win.row_off + win.height <= src.grid.height
            covered[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width] = True
    assert src.tile_rows * src.tile_cols >= 4
    assert covered.mean() >= 0.9
    assert len(list(src.pairs())) == src.tile_rows * src.tile_cols


def test_year_only_dates_are_flagged_and_shown_as_the_year():
    from textitsr.app.inspector import facts_line, image_captions
    from textitsr.config import REPO_ROOT
    from textitsr.data.scenes import date_precision
    from textitsr.index.catalog import _date_precision

    assert date_precision("landsat_1985") == "year" and date_precision("m_1_20120731") == "day"
    assert date_precision("undated") is None
    files = sorted((REPO_ROOT / "data" / "real-scenes" / "landsat").glob("*.tif"))
    src = GeoTiffSource(files[:2], band_names=("SWIR1", "NIR", "Red", "Green"), tile_size=128)
    pair = next(iter(src.pairs()))
    assert pair.dates[0].endswith("-01-01") and pair.location["date_precision"] == ["year", "year"]
    record = {"dates": pair.dates, "date_precision": _date_precision(pair.location), "source": "geotiff"}
    assert image_captions(record) == (f"before ({pair.dates[0][:4]})", f"after ({pair.dates[1][:4]})")
    assert "-01-01" not in facts_line(record) and "year only" in facts_line(record)
    # stores indexed before the precision was recorded: read again from the file names
    old = {k: v for k, v in pair.location.items() if k != "date_precision"}
    assert _date_precision(old) == ("year", "year")
    from textitsr.app.widgets import hit_caption
    from textitsr.index.catalog import PairHit

    hit = PairHit(1, 0.5, pair.pair_id, "geotiff", None, pair.bounds, pair.dates, [], None, ("year", "year"))
    assert hit_caption(hit) == f"{pair.dates[0][:4]} → {pair.dates[1][:4]}"  # result cards too
    day = {"dates": ("2012-07-31", "2014-08-02"), "date_precision": ("day", "day")}
    assert image_captions(day) == ("before (2012-07-31)", "after (2014-08-02)")
    assert "year only" not in facts_line(day)
