"""Web-mercator XYZ tile pyramids of an archive's georeferenced scenes, kept inside the store.

A map that draws scene imagery as inline images must send every image with the page; tiles let the
browser fetch only what is on screen, at the zoom it is shown. Each scene file the store's pairs
were cut from (`location.before` / `location.after`) gets one pyramid, from the zoom where the
scene fits one tile to its native resolution, under `<store>/tiles/<key>/{z}/{x}/{y}.webp`; `key`
is a digest of the file's content, so the same scene added twice (even from two paths) is tiled
once, and `tiles/index.json` lists every pyramid with its bounds and zooms. A pyramid is written
into a temporary folder and renamed into place; the index is rewritten atomically after it.

Tiles are read through GDAL's warper (`rasterio.vrt.WarpedVRT` onto each tile's mercator grid,
tile maths by `mercantile`), averaging source pixels below native resolution. Pixels outside the
scene or flagged nodata are transparent; fully transparent tiles are not written.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textitsr.atomic import atomic_dir, atomic_write_text
from textitsr.data.pairs import SceneDisplay
from textitsr.errors import InputError, StoreError
from textitsr.safe_read import loads_bounded, read_json_file

INDEX = "index.json"
TILE_SIZE = 256
TILE_FORMAT = "webp"
WEBP_QUALITY = 80
#: Web-mercator metres per pixel at zoom 0 (equator), for a 256 px tile.
_Z0_RES = 2 * math.pi * 6378137.0 / TILE_SIZE
#: Never write pyramids deeper than this (sub-decimetre imagery is shown enlarged beyond it).
MAX_ZOOM = 22
_RGB_NAMES = ("red", "green", "blue")


@dataclass(frozen=True)
class TileSet:
    """One scene's pyramid: where its tiles are, what they cover (lon/lat W, S, E, N), which zooms."""

    key: str
    path: str
    bounds: tuple[float, float, float, float]
    minzoom: int
    maxzoom: int
    n_tiles: int
    format: str = TILE_FORMAT
    #: `SceneDisplay.signature` the tiles were drawn with ("" : the file's own RGB bands, stretched here).
    display: str = ""

    def url(self, base: str) -> str:
        """Leaflet URL template of this pyramid under `base` (where the tiles folder is served)."""
        return f"{base.rstrip('/')}/{self.key}/{{z}}/{{x}}/{{y}}.{self.format}"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes (files that are not rasters; scenes: `scene_digest`)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Rows of a scene read at once while hashing its pixels (bounds the memory of `scene_digest`).
DIGEST_ROWS = 256


def dataset_digest(src: Any) -> str:
    """SHA-256 (hex) of an open raster's decoded pixels and georeferencing: the same imagery has the
    same digest whatever its file name, compression, tiling or byte order."""
    from rasterio.windows import Window

    digest = hashlib.sha256()
    crs = src.crs.to_epsg() or src.crs.to_wkt() if src.crs else None
    digest.update(json.dumps([src.count, src.width, src.height, list(src.dtypes), crs,
                              [round(v, 9) for v in list(src.transform)[:6]], src.nodata]).encode())
    for row in range(0, src.height, DIGEST_ROWS):
        strip = src.read(window=Window(0, row, src.width, min(DIGEST_ROWS, src.height - row)))
        digest.update(np.ascontiguousarray(strip).astype(strip.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def scene_digest(path: Path) -> str:
    """The identity of a scene file's imagery (`dataset_digest`); a file GDAL cannot read as a raster
    is identified by its bytes."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            return dataset_digest(src)
    except RasterioIOError:
        return file_digest(path)


#: Hex digits of a scene's content key.
KEY_LEN = 16


def tile_key(digest: str) -> str:
    """A scene's content key (the digest's first 16 hex digits): its identity, whatever its path."""
    return digest[:KEY_LEN]


def pyramid_key(content: str, display: SceneDisplay | None) -> str:
    """Folder name of a scene's pyramid: its content key, plus a digest of the display it was drawn
    with (one scene shown two ways gets two pyramids; a pyramid is never redrawn in place)."""
    if display is None:
        return content
    return f"{content}-{hashlib.sha256(display.signature.encode()).hexdigest()[:8]}"


@dataclass
class TileIndex:
    """`tiles/index.json`: the pyramids (key -> TileSet) and which scene file paths they show."""

    scenes: dict[str, TileSet]
    #: scene file path -> key (several paths may hold the same content, hence share a pyramid).
    paths: dict[str, str]

    @classmethod
    def read(cls, tiles_dir: Path) -> TileIndex:
        """The index of `tiles_dir` (empty when nothing was tiled yet)."""
        path = Path(tiles_dir) / INDEX
        if not path.is_file():
            return cls({}, {})
        try:
            raw = read_json_file(path)
            scenes = {str(k): TileSet(**{**v, "bounds": tuple(v["bounds"])})
                      for k, v in raw["scenes"].items()}
            paths = {str(p): str(k) for p, k in raw["paths"].items() if k in scenes}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise StoreError(
                f"{path}: corrupt tile index ({err}); delete the tiles folder to rebuild it"
            ) from err
        return cls(scenes, paths)

    def write(self, tiles_dir: Path) -> None:
        body = {"format": "textitsr-tiles", "version": 1,
                "scenes": {k: asdict(v) for k, v in sorted(self.scenes.items())},
                "paths": dict(sorted(self.paths.items()))}
        atomic_write_text(Path(tiles_dir) / INDEX, json.dumps(body, indent=1))

    def tiles_of(self, scene: str | Path | None) -> TileSet | None:
        """The pyramid showing a scene file (by the path the pairs record), or None."""
        key = self.paths.get(str(scene)) if scene is not None else None
        return self.scenes.get(key) if key else None


def zoom_range(res_m: float, width: int, height: int, lat: float) -> tuple[int, int]:
    """(min, max) zoom: native resolution at max; the whole scene within about one tile at min."""
    ground = max(res_m, 1e-3) / max(math.cos(math.radians(lat)), 1e-6)  # mercator metres per pixel
    maxzoom = int(min(MAX_ZOOM, max(0, round(math.log2(_Z0_RES / ground)))))
    span = max(width, height) * ground / (_Z0_RES / 2**maxzoom)
    minzoom = max(0, maxzoom - max(0, math.ceil(math.log2(max(span / TILE_SIZE, 1.0)))))
    return minzoom, maxzoom


def _display_bands(src: Any) -> list[int]:
    """1-based band indexes shown as R, G, B: named red/green/blue, else the first three (or one, grey)."""
    names = [(d or "").strip().lower() for d in src.descriptions]
    if all(n in names for n in _RGB_NAMES):
        return [names.index(n) + 1 for n in _RGB_NAMES]
    return [1, 2, 3] if src.count >= 3 else [1, 1, 1]


def _stretch(src: Any, bands: list[int]) -> list[tuple[float, float]]:
    """(low, high) per display band: the byte range for 8-bit scenes, else the 2-98 % percentiles."""
    if src.dtypes[0] == "uint8":
        return [(0.0, 255.0)] * len(bands)
    step = max(1, max(src.width, src.height) // 1024)
    shape = (len(bands), max(1, src.height // step), max(1, src.width // step))
    data = src.read(bands, out_shape=shape, masked=True).astype("float64")
    out = []
    for band in data:
        values = band.compressed()
        lo, hi = (np.percentile(values, (2, 98)) if values.size else (0.0, 1.0))
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return out


def _encode(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="WEBP", quality=WEBP_QUALITY, method=2)
    return buf.getvalue()


def write_scene_tiles(
    path: Path,
    dest: Path,
    progress: Callable[[int, int], None] | None = None,
    display: SceneDisplay | None = None,
) -> TileSet:
    """Write the XYZ pyramid of one georeferenced scene into the folder `dest` (created atomically).

    `display`: the bands and scaling the source's pairs were read with (`PairSource.map_scenes`), so
    the map shows what was embedded; None (stores whose source is unknown): the file's RGB bands,
    stretched over the whole scene.
    """
    import mercantile
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.transform import from_bounds
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # refused below, with the file named
            src = rasterio.open(path)
    except RasterioError as err:
        raise InputError(f"{path}: cannot read the scene to tile it ({err})") from err
    with src:
        if src.crs is None or src.transform.is_identity:
            raise InputError(f"{path}: not georeferenced (no CRS/geotransform); cannot place it on a map")
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        s, n = max(s, -85.0), min(n, 85.0)
        metres = src.crs.linear_units_factor[1] if src.crs.is_projected else 111_320.0
        lat = (s + n) / 2
        res_m = abs(src.res[0]) * metres * (1.0 if src.crs.is_projected else math.cos(math.radians(lat)))
        minzoom, maxzoom = zoom_range(res_m, src.width, src.height, lat)
        if display is not None:
            bands = list(display.bands)
            if max(bands) > src.count:
                raise InputError(f"{path}: display bands {bands} but the file has {src.count} band(s)")
            lo = np.array([o for o, _ in display.scale], dtype=np.float32)[:, None, None]
            span = np.array([d for _, d in display.scale], dtype=np.float32)[:, None, None]
        else:
            bands = _display_bands(src)
            stretch = _stretch(src, bands)
            lo = np.array([a for a, _ in stretch], dtype=np.float32)[:, None, None]
            span = np.array([b - a for a, b in stretch], dtype=np.float32)[:, None, None]
        tiles = [t for z in range(minzoom, maxzoom + 1) for t in mercantile.tiles(w, s, e, n, z)]
        # A scene with its own alpha band keeps it (GDAL refuses a second); otherwise one is added.
        own_alpha = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
        written = 0
        with atomic_dir(dest) as tmp:
            for i, tile in enumerate(tiles):
                xy = mercantile.xy_bounds(tile)
                grid = from_bounds(xy.left, xy.bottom, xy.right, xy.top, TILE_SIZE, TILE_SIZE)
                resampling = Resampling.bilinear if tile.z == maxzoom else Resampling.average
                with WarpedVRT(src, crs="EPSG:3857", transform=grid, width=TILE_SIZE, height=TILE_SIZE,
                               resampling=resampling, add_alpha=not own_alpha) as vrt:
                    data = vrt.read([*bands, own_alpha[0] if own_alpha else vrt.count])
                alpha = data[-1]
                if not alpha.any():
                    continue
                rgb = np.clip((data[:-1].astype(np.float32) - lo) / span * 255.0 + 0.5, 0, 255)
                rgba = np.concatenate([rgb.astype(np.uint8), (alpha > 0)[None].astype(np.uint8) * 255])
                out = tmp / str(tile.z) / str(tile.x) / f"{tile.y}.{TILE_FORMAT}"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(_encode(np.ascontiguousarray(rgba.transpose(1, 2, 0))))
                written += 1
                if progress is not None:
                    progress(i + 1, len(tiles))
    return TileSet(dest.name, str(path), (w, s, e, n), minzoom, maxzoom, written,
                   display=display.signature if display is not None else "")


def scene_paths(locations: Iterable[Any]) -> list[Path]:
    """Distinct scene files named by pairs' `location` (JSON text or dict: `before` / `after`)."""
    seen: dict[str, None] = {}
    for loc in locations:
        if isinstance(loc, str):
            try:
                loc = loads_bounded(loc, max_depth=16)
            except ValueError:
                continue
        if not isinstance(loc, Mapping):
            continue
        for when in ("before", "after"):
            value = loc.get(when)
            if isinstance(value, str) and value.lower().endswith((".tif", ".tiff")):
                seen.setdefault(value, None)
    return [Path(p) for p in seen]


def update_tiles(
    tiles_dir: Path,
    scenes: Iterable[Path | SceneDisplay],
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, str]:
    """Tile every scene file not tiled yet; returns scene path -> pyramid key for all of `scenes`.

    A `SceneDisplay` is tiled with its bands and scaling (again when its pyramid was drawn another
    way); a bare path keeps whatever pyramid it has. Missing files and scenes without georeferencing
    are skipped (their pairs keep outlines only).
    """
    tiles_dir = Path(tiles_dir)
    index = TileIndex.read(tiles_dir)
    keys: dict[str, str] = {}
    todo = [(s.path, s) if isinstance(s, SceneDisplay) else (Path(s), None) for s in scenes]
    for i, (path, display) in enumerate(todo):
        path = Path(path)
        if not path.is_file():
            continue
        known = index.paths.get(str(path))
        content = known[:KEY_LEN] if known and (tiles_dir / known).is_dir() else tile_key(scene_digest(path))
        key = (known if display is None and known and known.startswith(content)
               else pyramid_key(content, display))
        keys[str(path)] = key
        if key in index.scenes and (tiles_dir / key).is_dir():
            if index.paths.get(str(path)) != key:
                index.paths[str(path)] = key
                index.write(tiles_dir)
            continue

        def step(done: int, total: int, i: int = i, name: str = path.name) -> None:
            if progress is not None:
                progress((i + done / max(total, 1)) / len(todo), f"map tiles of {name}: {done}/{total}")

        try:
            index.scenes[key] = write_scene_tiles(path, tiles_dir / key, step, display)
        except InputError:
            continue
        index.paths[str(path)] = key
        index.write(tiles_dir)
    if progress is not None:
        progress(1.0, "map tiles up to date")
    return keys


@dataclass(frozen=True)
class SceneArea:
    """The pairs cut from one before/after scene pair: one area on the map, with its imagery."""

    name: str
    #: lon/lat (W, S, E, N) of the area's pairs.
    bounds: tuple[float, float, float, float]
    n_pairs: int
    before: TileSet | None
    after: TileSet | None


def _area_name(before: str, after: str, dates: tuple[Any, Any]) -> str:
    """'<place> · <date> → <date>': the files' common name without dates (else their folder)."""
    from textitsr.data.scenes import place_from_names

    place = place_from_names([before, after])
    when = " → ".join(str(d)[:10] for d in dates if isinstance(d, str) and d)
    return f"{place} · {when}" if when else place


def scene_areas(metadata: Any, index: TileIndex) -> list[SceneArea]:
    """Areas of a store's metadata (one per before/after scene pair), largest first.

    Pairs whose `location` names no scene files (PNG datasets) or no footprint belong to no area.
    """
    import pandas as pd

    if len(metadata) == 0:
        return []
    locs = [json.loads(t) if isinstance(t, str) and t else {} for t in metadata["location"]]
    frame = pd.DataFrame({
        "before": [str(loc.get("before") or "") for loc in locs],
        "after": [str(loc.get("after") or "") for loc in locs],
        "date_before": metadata["date_before"].to_numpy(), "date_after": metadata["date_after"].to_numpy(),
        "west": metadata["west"].to_numpy(dtype=float), "south": metadata["south"].to_numpy(dtype=float),
        "east": metadata["east"].to_numpy(dtype=float), "north": metadata["north"].to_numpy(dtype=float),
    })
    frame = frame[(frame["before"] != "") & frame[["west", "south", "east", "north"]].notna().all(axis=1)]
    areas = []
    for (before, after), group in frame.groupby(["before", "after"], sort=False):
        first = group.iloc[0]
        areas.append(SceneArea(
            name=_area_name(before, after, (first["date_before"], first["date_after"])),
            bounds=(float(group["west"].min()), float(group["south"].min()),
                    float(group["east"].max()), float(group["north"].max())),
            n_pairs=len(group),
            before=index.tiles_of(before),
            after=index.tiles_of(after),
        ))
    return sorted(areas, key=lambda a: (-a.n_pairs, a.name))


def store_scene_paths(store: Any) -> list[Path]:
    """The scene files a store's pairs were cut from (those that still exist)."""
    return [p for p in scene_paths(store.metadata()["location"]) if p.is_file()]


def scene_keys(store: Any) -> set[str]:
    """Content keys of every scene in the store (from the tile index; files it lacks are hashed)."""
    index = TileIndex.read(store.tiles_dir)
    return {(index.paths.get(str(p)) or tile_key(scene_digest(p)))[:KEY_LEN]
            for p in store_scene_paths(store)}


def refuse_known_scenes(store: Any, keys: list[str], names: list[str]) -> None:
    """InputError when every scene (content `tile_key`s) is in the store already: adding them again
    would only duplicate pairs."""
    if keys and set(keys) <= scene_keys(store):
        raise InputError(
            f"{' and '.join(names)}: these scenes are already in the archive (files with the same "
            "content were added before, possibly under other names); nothing was added"
        )
