"""`index.archive.Archive`, the one writer of a store: map tiles come from the source's own reads,
a service sees the new manifest without being told, and nothing else in the product writes a store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_main
from PIL import Image

from textitsr.data.geotiff import GeoTiffSource
from textitsr.index.archive import Archive
from textitsr.index.store import Store
from textitsr.index.tiles import TileIndex
from textitsr.service import SearchService

REPO = Path(__file__).resolve().parents[1]
#: Constant-ish band levels of the series (uint16): red, green, blue, nir.
LEVELS = (1000, 2000, 3000, 6000)


def four_band_series(folder: Path, size: int = 128) -> list[Path]:
    """Two dated 4-band (red, green, blue, nir) uint16 GeoTIFFs of one UTM place, each band at its
    own level, so a map drawn with other bands or another stretch has another colour."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for date in ("2019-05-01", "2021-05-01"):
        pixels = np.stack([np.full((size, size), v, np.float64) for v in LEVELS])
        pixels = (pixels * (1 + 0.02 * rng.standard_normal(pixels.shape))).astype(np.uint16)
        path = folder / f"farm_{date}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                           crs="EPSG:32614", transform=from_origin(640000.0, 3360000.0, 1.0, 1.0)) as dst:
            dst.write(pixels)
            for i, name in enumerate(("red", "green", "blue", "nir"), start=1):
                dst.set_band_description(i, name)
        paths.append(path)
    return paths


def mean_tile_colour(tiles_dir: Path, key: str, zoom: int) -> np.ndarray:
    """Mean RGB over the opaque pixels of every tile of one zoom level of a pyramid."""
    pixels = [np.asarray(Image.open(f).convert("RGBA")).reshape(-1, 4)
              for f in (tiles_dir / key / str(zoom)).rglob("*.webp")]
    rgba = np.concatenate(pixels)
    return rgba[rgba[:, 3] > 0, :3].astype(float).mean(axis=0)


def test_the_map_of_a_cir_series_shows_the_cir_bands_as_embedded(
    tiny_archive, tmp_path: Path, monkeypatch, capsys
) -> None:
    scenes = four_band_series(tmp_path / "scenes")
    store = tmp_path / "store"
    code, err = cli_main(monkeypatch, capsys, "index", "--checkpoint", tiny_archive.checkpoint,
                         "--root", tmp_path / "scenes", "--out", store, "--tile-size", "64",
                         "--display", "cir",  # what a person types for a colour-infrared map
                         "--archive-change-weight", "0")
    assert code == 0, err
    built = Store.open(store)
    assert len(built) == 4
    assert [s["archive_change_weight"] for s in built.manifest["shards"]] == [0.0]  # as asked

    svc = SearchService.open(store)
    before, _ = svc.thumbnails(svc.footprints()["features"][0]["properties"]["pair_id"])
    thumb = before.reshape(-1, 3).astype(float).mean(axis=0)
    index = TileIndex.read(built.tiles_dir)
    drawn = index.tiles_of(scenes[0])
    assert drawn is not None and drawn.display  # drawn with the source's display, not the file's RGB
    tile = mean_tile_colour(built.tiles_dir, drawn.key, drawn.maxzoom)
    # cir = (nir, red, green): near-white red channel, dark green and blue, like the thumbnail
    assert tile[0] > 200 and tile[1] < 80 and tile[2] < 110
    np.testing.assert_allclose(tile, thumb, atol=8)

    # The same scene shown as RGB is a second pyramid with another colour (blue strongest).
    rgb = Archive(tmp_path / "rgb", tiny_archive.checkpoint).build(
        GeoTiffSource(scenes, tile_size=64, display="rgb"), progress=False)
    shown = TileIndex.read(rgb.tiles_dir).tiles_of(scenes[0])
    assert shown is not None and shown.key != drawn.key
    colour = mean_tile_colour(rgb.tiles_dir, shown.key, shown.maxzoom)
    assert colour[2] > colour[1] > colour[0]


def test_a_service_sees_scenes_another_writer_added_without_a_refresh(tiny_archive, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store)
    svc = SearchService.open(store)
    n = len(svc)
    scenes = four_band_series(tmp_path / "scenes")
    added = Archive(store).add_scenes(scenes, tile_size=64)
    assert added == 4 and len(svc) == n + 4
    assert any(h.pair_id.startswith("farm") for h in svc.search_text("a field", k=n + 4))


#: The functions that write a store, and the one module allowed to call each of them.
WRITERS = {"build_store": "textitsr/index/archive.py", "update_tiles": "textitsr/index/archive.py",
           "with_embeddings": "textitsr/index/archive.py"}


def product_files() -> list[Path]:
    pages = sorted((REPO / "pages").glob("*.py"))
    return [*sorted((REPO / "textitsr").rglob("*.py")), *pages, REPO / "app.py"]


def calls_of(path: Path, names: set[str]) -> list[tuple[str, int]]:
    """(name, line) of every call of a function or method called one of `names` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            if name in names:
                found.append((name, node.lineno))
    return found


def test_one_call_site_per_archive_write_path() -> None:
    """Only `Archive` calls the store writers, each from one place; everyone else calls `Archive`."""
    sites: dict[str, list[str]] = {name: [] for name in WRITERS}
    for path in product_files():
        for name, line in calls_of(path, set(WRITERS)):
            sites[name].append(f"{path.relative_to(REPO)}:{line}")
    for name, where in sites.items():
        assert len(where) == 1 and where[0].startswith(WRITERS[name]), (name, where)
    # and nothing outside index/ reaches past the facade to the builder or the tiler
    for path in product_files():
        rel = str(path.relative_to(REPO))
        if rel.startswith("textitsr/index/"):
            continue
        text = path.read_text("utf-8")
        for module in ("textitsr.index.build import build_store", "textitsr.index.tiles import update_tiles"):
            assert module not in text, f"{rel} imports {module}"


def _scene(path: Path, pixels: np.ndarray, compress: str | None = None) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"compress": compress} if compress else {}
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=3,
                       dtype="uint8", crs="EPSG:32614", transform=from_origin(640000.0, 3360000.0, 1.0, 1.0),
                       **extra) as dst:
        dst.write(pixels)
    return path


def test_scenes_are_known_by_their_pixels_and_new_ones_never_collide_by_name(tiny_archive, tmp_path) -> None:
    """The same imagery saved with another compression under other names is refused; new imagery
    under the names of scenes already in the archive is added, with pair ids of its own."""
    import shutil

    from textitsr.errors import InputError

    store = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store)
    archive = Archive(store, tiny_archive.checkpoint)
    rng = np.random.default_rng(0)
    first = [rng.integers(0, 255, (3, 64, 64), np.uint8) for _ in range(2)]
    names = ("naip_2018-06-01.tif", "naip_2020-06-01.tif")
    added = archive.add_scenes([_scene(tmp_path / "a" / n, px) for n, px in zip(names, first, strict=True)],
                               tile_size=32)
    assert added == 4
    again = [_scene(tmp_path / "b" / f"copy_{i}.tif", px, compress="lzw") for i, px in enumerate(first)]
    assert again[0].read_bytes() != (tmp_path / "a" / names[0]).read_bytes()
    with pytest.raises(InputError, match="already in the archive"):
        archive.add_scenes(again, tile_size=32)
    other = [rng.integers(0, 255, (3, 64, 64), np.uint8) for _ in range(2)]
    assert archive.add_scenes([_scene(tmp_path / "c" / n, px) for n, px in zip(names, other, strict=True)],
                              tile_size=32) == 4
    ids = [p for p in Store.open(store).metadata()["pair_id"] if p.startswith("naip")]
    assert len(ids) == len(set(ids)) == 8
    assert all(re.fullmatch(r"naip-[0-9a-f]{6}_20180601_20200601_r\d_c\d", p) for p in ids), ids


def test_a_failed_upload_leaves_nothing_behind(tmp_path) -> None:
    from textitsr.app.uploads import stored_uploads

    uploads = tmp_path / "uploads"
    with pytest.raises(RuntimeError, match="embedding failed"), \
            stored_uploads([("a_2018.tif", b"II*\x00one"), ("a_2018.tif", b"II*\x00two")], uploads) as paths:
        assert [p.name for p in paths] == ["1-a_2018.tif", "2-a_2018.tif"] and all(p.is_file() for p in paths)
        raise RuntimeError("embedding failed")
    assert not any(uploads.rglob("*"))  # the stamp folder is gone too
    with stored_uploads([("b.tif", b"II*\x00")], uploads) as kept:
        pass
    assert kept[0].read_bytes() == b"II*\x00"
