"""Map tiles of an archive's scenes: a web-mercator XYZ pyramid that shows the scene's own pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import mercantile
import numpy as np
import pytest
from PIL import Image

from textitsr.index.tiles import TileIndex, scene_areas, update_tiles, zoom_range

RED, BLUE = (220, 30, 30), (30, 30, 220)


def halves_scene(path: Path, width: int = 512, height: int = 256) -> Path:
    """A 1 m/px UTM scene: the western half red, the eastern half blue."""
    import rasterio
    from rasterio.transform import from_origin

    pixels = np.zeros((3, height, width), np.uint8)
    pixels[:, :, : width // 2] = np.array(RED)[:, None, None]
    pixels[:, :, width // 2 :] = np.array(BLUE)[:, None, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32614", transform=from_origin(640000.0, 3360000.0, 1.0, 1.0)) as dst:
        dst.write(pixels)
    return path


def tile_pixel(tiles: Path, key: str, z: int, lon: float, lat: float) -> np.ndarray:
    """RGBA of the tile pixel at (lon, lat), zoom z."""
    tile = mercantile.tile(lon, lat, z)
    img = np.asarray(Image.open(tiles / key / str(z) / str(tile.x) / f"{tile.y}.webp").convert("RGBA"))
    b = mercantile.bounds(tile)
    col = int((lon - b.west) / (b.east - b.west) * 256)
    row = int((b.north - lat) / (b.north - b.south) * 256)
    return img[min(row, 255), min(col, 255)]


def test_tiles_show_the_scene_pixels_where_they_are(tmp_path):
    scene = halves_scene(tmp_path / "scenes" / "place_2019-05-01.tif")
    keys = update_tiles(tmp_path / "tiles", [scene])
    index = TileIndex.read(tmp_path / "tiles")
    tiles = index.tiles_of(scene)
    assert tiles is not None and keys == {str(scene): tiles.key}
    w, s, e, n = tiles.bounds
    assert (tiles.minzoom, tiles.maxzoom) == (16, 17)  # 1 m pixels; 512 px wide: about one tile at 16
    lat = (s + n) / 2
    for z in (tiles.minzoom, tiles.maxzoom):
        west_px = tile_pixel(tmp_path / "tiles", tiles.key, z, w + 0.2 * (e - w), lat)
        east_px = tile_pixel(tmp_path / "tiles", tiles.key, z, w + 0.8 * (e - w), lat)
        assert west_px[3] == 255 and np.abs(west_px[:3].astype(int) - RED).max() <= 12
        assert east_px[3] == 255 and np.abs(east_px[:3].astype(int) - BLUE).max() <= 12
    outside = tile_pixel(tmp_path / "tiles", tiles.key, tiles.minzoom, e + 2 * (e - w), lat) if (
        mercantile.tile(e + 2 * (e - w), lat, tiles.minzoom) == mercantile.tile(e, lat, tiles.minzoom)
    ) else np.zeros(4)
    assert outside[3] == 0  # beyond the scene: transparent (or no tile at all)


def test_the_same_scene_under_another_path_is_tiled_once(tmp_path):
    scene = halves_scene(tmp_path / "a" / "place_2019-05-01.tif")
    copy = tmp_path / "b" / "upload.tif"
    copy.parent.mkdir()
    shutil.copyfile(scene, copy)
    first = update_tiles(tmp_path / "tiles", [scene])
    n_files = sum(1 for _ in (tmp_path / "tiles").rglob("*.webp"))
    again = update_tiles(tmp_path / "tiles", [scene, copy])
    assert again[str(copy)] == first[str(scene)]
    assert sum(1 for _ in (tmp_path / "tiles").rglob("*.webp")) == n_files
    assert TileIndex.read(tmp_path / "tiles").tiles_of(copy).key == first[str(scene)]


def test_zoom_range_follows_resolution_and_size():
    assert zoom_range(1.0, 256, 256, 0.0) == (17, 17)
    assert zoom_range(1.0, 4096, 4096, 0.0) == (13, 17)
    assert zoom_range(30.0, 8000, 8000, 45.0)[1] == 12


def test_areas_are_scenes_not_fragments(tiny_archive):
    from textitsr.index.store import Store

    store = Store.open(tiny_archive.store)
    areas = scene_areas(store.metadata(), TileIndex.read(store.tiles_dir))
    assert sorted(a.n_pairs for a in areas) == [8, 8, 24]  # the world's test, val and train scenes
    assert all(a.before is not None and a.after is not None for a in areas)
    assert all(a.before.key != a.after.key for a in areas)
    meta = store.metadata()
    assert areas[0].bounds == pytest.approx((meta["west"].min(), meta["south"].min(),
                                             meta["east"].max(), meta["north"].max()), abs=1.0)


def test_areas_are_named_from_the_files_without_dates_or_time_stamps():
    from textitsr.data.scenes import place_from_names
    from textitsr.index.tiles import _area_name

    naip = ["/d/naip/m_4709963_se_14_1_20090818.tif", "/d/naip/m_4709963_se_14_1_20100629.tif"]
    assert _area_name(*naip, ("2009-08-18", "2010-06-29")) == "m_4709963_se_14_1 · 2009-08-18 → 2010-06-29"
    assert place_from_names(["/d/landsat/1990.tif", "/d/landsat/1995.tif"]) == "landsat"
    upload = "/up/20261130-092544-855427"
    assert place_from_names([f"{upload}/a.tif", f"{upload}/b.tif"]) == "scene"
    assert place_from_names(["/up/20261130-092544/pucallpa_1985.tif", "/x/pucallpa_2020.tif"]) == "pucallpa"
