"""A time series of GeoTIFF scenes of one place -> aligned, georeferenced tile pairs.

How a series becomes pairs:

1. Every file is opened and checked (a readable GeoTIFF with a CRS and the same band count), and dated
   from its name (``m_..._20120731.tif``, ``2012-07-31``, ``1985.tif``) or its tags
   (``TIFFTAG_DATETIME``, ``ACQUISITION_DATE``, ...). Scenes are ordered by date.
2. The common grid is the reference scene's CRS and pixel size (the earliest date unless
   `reference` says otherwise), over the intersection of all footprints, snapped inward to the
   reference's pixel lattice. Scenes that do not overlap are an error.
3. Each scene is read through a `WarpedVRT` onto that grid (reprojected/resampled when its CRS, pixel
   size or pixel phase differ) one tile window at a time, so RAM stays bounded by a tile, whatever
   the scene size.
4. Scaling to [0, 1] is per scene, never per tile, so the tiles of both dates stay comparable:
   ``stretch="gain"`` (default) divides by one gain per scene (255 for uint8, else the 99th percentile
   of all valid pixels, estimated on a decimated read) which keeps band ratios and hence NDVI/NDWI;
   ``"percentile"`` stretches each band between its 2nd and 98th percentile (best contrast, indices
   distorted); ``"none"`` uses the dtype's full range.
5. Tiles are full `tile_size` squares on the grid that cover it whole: where the grid is not a multiple
   of the stride, one more row/column of tiles is set flush with the right/bottom edge, overlapping its
   neighbour, so no strip of the scene is left unsearchable (a sub-pixel offset between dates that
   makes a 512 px crop a 511 px grid still gives 2 x 2 tiles, not 1).
   A tile whose nodata fraction in either date exceeds `max_nodata` (default 1%: real scenes carry
   stray nodata pixels) is skipped; kept tiles record their nodata fraction in `location` and hold 0
   at nodata pixels.
6. Pairs: consecutive dates (default), all date pairs (``pairing="all"``), or chosen index pairs
   (``pairing=[(0, 9)]``, indices in date order). Ids: ``<place>_<date1>_<date2>_r<row>_c<col>``.
   A scene's tile sits in several pairs (a middle date in two consecutive pairs, in n-1 with
   "all"); its warped window read is kept (up to `TILE_CACHE_BYTES`, least recently used dropped
   first) so each (tile, date) is read and warped once, not once per pair.

Bands are named from the band descriptions, else `band_names`, else by count (1 grey, 3 RGB, 4 RGB+NIR);
`bands` keeps a subset; `display` chooses "rgb", "false-colour" (swir1/nir/red), "cir" or 3 names.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textitsr.data.imageio import (
    normalise_band_name,
    resolve_display,
    scale_gain,
    to_unit,
)
from textitsr.data.pairs import BitemporalPair, Bounds, PairSourceBase, SceneDisplay, id_part
from textitsr.data.scenes import Scene, expand_paths, open_scene, place_name
from textitsr.errors import InputError

#: Longest side of the decimated read used to estimate a scene's stretch (bounds its RAM).
STATS_MAX_SIDE = 1024
#: Bytes of warped tile reads kept while iterating pairs (each (tile, date) is then read once).
TILE_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class GeoTiffOptions:
    """How a series is tiled, paired, band-selected and scaled (defaults suit NAIP/Landsat scenes)."""

    tile_size: int = 256
    #: Step between tile origins in grid pixels; None = tile_size (no overlap).
    stride: int | None = None
    #: "consecutive", "all", or explicit (i, j) index pairs in date order.
    pairing: str | Sequence[tuple[int, int]] = "consecutive"
    #: Names for the file's bands when its descriptions do not say (e.g. Landsat: swir1,nir,red,green).
    band_names: tuple[str, ...] | None = None
    #: Subset of bands to keep (None = all).
    bands: tuple[str, ...] | None = None
    display: str | tuple[str, ...] | None = None
    stretch: str = "gain"
    #: Tiles whose nodata fraction (in either date) exceeds this are skipped.
    max_nodata: float = 0.01
    #: Index (in date order) of the scene whose CRS and pixel size define the grid.
    reference: int = 0
    resampling: str = "bilinear"
    #: Name used in pair ids; None = derived from the file names (or the folder name).
    place: str | None = None


@dataclass
class Grid:
    """The common grid every scene is warped onto."""

    crs: Any
    transform: Any
    width: int
    height: int
    scale: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


class GeoTiffSource(PairSourceBase):
    """Tile pairs of a GeoTIFF time series (see the module docstring for every rule)."""

    name = "geotiff"

    def __init__(self, paths: Path | Sequence[Path], options: GeoTiffOptions | None = None, **overrides: Any):
        opts = options or GeoTiffOptions()
        if overrides:
            from dataclasses import replace

            opts = replace(opts, **overrides)
        self.options = opts
        if opts.tile_size < 8 or (opts.stride is not None and opts.stride < 1):
            raise InputError(
                f"tile_size={opts.tile_size}, stride={opts.stride}: expected tile_size >= 8, stride >= 1"
            )
        if not 0.0 <= opts.max_nodata <= 1.0:  # also refuses NaN
            raise InputError(f"max_nodata={opts.max_nodata}: expected a fraction between 0 and 1")
        if opts.stretch not in ("gain", "percentile", "none"):
            raise InputError(f"stretch={opts.stretch!r}: expected 'gain', 'percentile' or 'none'")
        files = expand_paths(paths)
        if len(files) < 2:
            raise InputError(
                f"{files[0] if files else paths}: a series needs at least two GeoTIFF scenes of one place"
            )
        scenes = [open_scene(f, opts.band_names) for f in files]
        first = scenes[0]
        for s in scenes[1:]:
            if s.band_names != first.band_names:
                raise InputError(
                    f"{s.path}: bands {list(s.band_names)} differ from {first.path.name}'s "
                    f"{list(first.band_names)}; expected every scene of a series to have the same bands"
                )
        if all(s.date for s in scenes):
            scenes.sort(key=lambda s: s.date or "")
        tokens = [s.token for s in scenes]
        if len(set(tokens)) != len(tokens):  # same date twice: fall back to the unique file stems
            for s in scenes:
                s.token = re.sub(r"[^A-Za-z0-9]+", "-", s.path.stem)
        self.scenes = scenes
        self.place = id_part(opts.place) if opts.place else place_name(scenes)
        self.all_bands = first.band_names
        keep = tuple(normalise_band_name(b) for b in opts.bands) if opts.bands else self.all_bands
        missing = [b for b in keep if b not in self.all_bands]
        if missing:
            raise InputError(
                f"{first.path}: bands {missing} requested, but the scenes have {len(self.all_bands)} band(s) "
                f"{list(self.all_bands)}"
            )
        self.bands = keep
        self._band_idx = [self.all_bands.index(b) + 1 for b in keep]
        self.display = resolve_display(opts.display, keep, str(first.path))
        self.index_pairs = self._index_pairs(opts.pairing)
        self.grid = self._common_grid()
        stride = opts.stride or opts.tile_size
        self._row_offsets = tile_offsets(self.grid.height, opts.tile_size, stride)
        self._col_offsets = tile_offsets(self.grid.width, opts.tile_size, stride)
        self.tile_rows, self.tile_cols = len(self._row_offsets), len(self._col_offsets)
        if self.tile_rows == 0 or self.tile_cols == 0:
            raise InputError(
                f"{first.path}: the scenes' common area is {self.grid.width}x{self.grid.height} px, smaller "
                f"than one {opts.tile_size} px tile; expected a smaller tile_size"
            )

    # ------------------------------------------------------------------ set-up
    def _index_pairs(self, pairing: str | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        n = len(self.scenes)
        if pairing == "consecutive":
            return [(i, i + 1) for i in range(n - 1)]
        if pairing == "all":
            return [(i, j) for i in range(n) for j in range(i + 1, n)]
        if isinstance(pairing, str):
            raise InputError(f"pairing={pairing!r}: expected 'consecutive', 'all' or a list of (i, j)")
        out = []
        for pair in pairing:
            i, j = (int(v) for v in pair)
            if not (0 <= i < n and 0 <= j < n and i != j):
                raise InputError(f"pair ({i}, {j}): expected two different scene indices in 0..{n - 1}")
            out.append((i, j))
        return out

    def _common_grid(self) -> Grid:
        from affine import Affine
        from rasterio.warp import transform_bounds

        if not 0 <= self.options.reference < len(self.scenes):
            raise InputError(f"reference={self.options.reference}: expected 0..{len(self.scenes) - 1}")
        ref = self.scenes[self.options.reference]
        west, south, east, north = ref.bounds
        for s in self.scenes:
            w, so, e, n = transform_bounds(s.crs, ref.crs, *s.bounds, densify_pts=21)
            if min(east, e) <= max(west, w) or min(north, n) <= max(south, so):
                others = ref.path.name if s is not ref else "the others"
                raise InputError(
                    f"{s.path}: does not overlap {others} (bounds {tuple(round(v, 4) for v in s.bounds)} in "
                    f"{s.crs}); expected scenes of one place"
                )
            west, south, east, north = max(west, w), max(south, so), min(east, e), min(north, n)
        rx, ry = ref.res
        ox, oy = ref.bounds[0], ref.bounds[3]
        left = ox + math.ceil((west - ox) / rx - 1e-6) * rx  # snap inward to the reference lattice
        top = oy - math.ceil((oy - north) / ry - 1e-6) * ry
        width = int(math.floor((east - left) / rx + 1e-6))
        height = int(math.floor((top - south) / ry + 1e-6))
        if width <= 0 or height <= 0:
            raise InputError(
                f"{ref.path}: the scenes overlap by less than one pixel; expected scenes of one place"
            )
        return Grid(crs=ref.crs, transform=Affine(rx, 0.0, left, 0.0, -ry, top), width=width, height=height)

    @contextlib.contextmanager
    def _warped(self, scene: Scene) -> Iterator[Any]:
        """The scene on the common grid (a lazy WarpedVRT: pixels are warped per window read)."""
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        g = self.grid
        with rasterio.open(scene.path) as src:
            kwargs: dict[str, Any] = dict(
                crs=g.crs,
                transform=g.transform,
                width=g.width,
                height=g.height,
                resampling=Resampling[self.options.resampling],
            )
            if scene.nodata is None:
                kwargs["add_alpha"] = True
            with WarpedVRT(src, **kwargs) as vrt:
                yield vrt

    def _read(self, vrt: Any, scene: Scene, window: Any) -> tuple[np.ndarray, np.ndarray]:
        """(bands x h x w data, h x w validity) of one window."""
        with _pixels_of(scene):
            data = vrt.read(self._band_idx, window=window)
            if scene.nodata is None:
                valid = vrt.read(scene.count + 1, window=window) > 0
            else:
                valid = _dataset_mask(vrt, window=window)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def _scale(self, scene: Scene, vrt: Any) -> list[tuple[float, float]]:
        """Per-scene (offset, divisor) per kept band, from one decimated read of the whole grid."""
        key = str(scene.path)
        if key in self.grid.scale:
            return self.grid.scale[key]
        stretch = self.options.stretch
        if stretch == "none":
            info = np.iinfo(scene.dtype).max if np.issubdtype(np.dtype(scene.dtype), np.integer) else 1.0
            out = [(0.0, float(info))] * len(self.bands)
        else:
            f = max(1.0, max(self.grid.width, self.grid.height) / STATS_MAX_SIDE)
            shape = (max(1, int(self.grid.height / f)), max(1, int(self.grid.width / f)))
            with _pixels_of(scene):
                data = vrt.read(self._band_idx, out_shape=(len(self.bands), *shape))
                if scene.nodata is None:
                    valid = vrt.read(scene.count + 1, out_shape=shape) > 0
                else:
                    valid = _dataset_mask(vrt, out_shape=shape)
            if stretch == "gain":
                gain = scale_gain(data, np.broadcast_to(valid, data.shape))
                out = [(0.0, gain)] * len(self.bands)
            else:
                out = []
                for band in data:
                    vals = band[valid].astype(np.float64)
                    lo, hi = np.percentile(vals, (2, 98)) if vals.size else (0.0, 1.0)
                    out.append((float(lo), float(max(hi - lo, 1e-6))))
        self.grid.scale[key] = out
        return out

    # ------------------------------------------------------------------ protocol
    def __len__(self) -> int:
        """Upper bound: tiles x pairs (tiles with nodata are skipped while iterating)."""
        return self.tile_rows * self.tile_cols * len(self.index_pairs)

    def tile_window(self, row: int, col: int) -> Any:
        from rasterio.windows import Window

        size = self.options.tile_size
        return Window(self._col_offsets[col], self._row_offsets[row], size, size)

    def tile_bounds(self, row: int, col: int) -> tuple[Bounds, Bounds]:
        """(native bounds in the grid CRS, lon/lat bounds) of one tile."""
        from rasterio.warp import transform_bounds
        from rasterio.windows import bounds as window_bounds

        native = window_bounds(self.tile_window(row, col), self.grid.transform)
        lonlat = transform_bounds(self.grid.crs, "EPSG:4326", *native, densify_pts=21)
        return tuple(float(v) for v in native), tuple(float(v) for v in lonlat)

    def _crs_string(self) -> str:
        epsg = self.grid.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.grid.crs.to_string()

    def paths(self) -> list[Path]:
        return [s.path for s in self.scenes]

    def map_scenes(self) -> list[SceneDisplay]:
        """Each scene with this source's display bands and per-scene scaling (the stretch its pairs
        get, from the same decimated read), so the map shows what is embedded and thumbnailed."""
        shown = [self.bands.index(b) for b in self.display]
        out = []
        for scene in self.scenes:
            with self._warped(scene) as vrt:
                scale = self._scale(scene, vrt)
            out.append(SceneDisplay(
                path=scene.path,
                bands=tuple(self._band_idx[k] for k in shown),
                scale=tuple(scale[k] for k in shown),
            ))
        return out

    def count(self, split: str | None = None) -> int:
        """Upper bound of the pairs (tiles with too much nodata are skipped); no pairs in a split."""
        return len(self) if split is None else 0

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        """All pairs of kept tiles; `split` other than None yields nothing (a series has no splits)."""
        if split is not None:
            return
        crs = self._crs_string()
        tiles = _TileReads(TILE_CACHE_BYTES)
        for i, j in self.index_pairs:
            a, b = self.scenes[i], self.scenes[j]
            with self._warped(a) as va, self._warped(b) as vb:
                scale_a, scale_b = self._scale(a, va), self._scale(b, vb)
                for row in range(self.tile_rows):
                    for col in range(self.tile_cols):
                        win = self.tile_window(row, col)
                        da, ma = tiles.read((i, row, col), self._read, va, a, win)
                        db, mb = tiles.read((j, row, col), self._read, vb, b, win)
                        nodata = float(max(1.0 - ma.mean(), 1.0 - mb.mean()))
                        if nodata > self.options.max_nodata:
                            continue
                        native, lonlat = self.tile_bounds(row, col)
                        yield BitemporalPair(
                            pair_id=f"{self.place}_{a.token}_{b.token}_r{row}_c{col}",
                            before=_apply(da, scale_a),
                            after=_apply(db, scale_b),
                            bands=self.bands,
                            display_bands=self.display,
                            source=self.name,
                            bounds=lonlat,
                            crs=crs,
                            native_bounds=native,
                            dates=(a.date, b.date),
                            location={
                                "kind": self.name,
                                "before": str(a.path),
                                "after": str(b.path),
                                "row": row,
                                "col": col,
                                "window": [
                                    int(win.col_off),
                                    int(win.row_off),
                                    int(win.width),
                                    int(win.height),
                                ],
                                "nodata_fraction": nodata,
                                # "year": the date is YYYY-01-01 standing for a year only
                                "date_precision": [a.date_precision, b.date_precision],
                            },
                        )


def tile_offsets(length: int, tile_size: int, stride: int) -> list[int]:
    """Tile origins along one axis of `length` px: every `stride`, plus one flush with the far edge when
    the last regular tile stops short of it (the edge strip is then covered by an overlapping tile)."""
    if length < tile_size:
        return []
    offsets = list(range(0, length - tile_size + 1, stride))
    if offsets[-1] + tile_size < length:
        offsets.append(length - tile_size)
    return offsets


class _TileReads:
    """Least-recently-used (scene, row, col) -> (data, validity) of one `pairs` pass, within a byte
    budget. Arrays are handed out read-only: every pair of the tile shares them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.nbytes = max_bytes, 0
        self._items: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def read(self, key: tuple[int, int, int], read: Any, *args: Any) -> tuple[np.ndarray, np.ndarray]:
        """The kept read of `key`, else `read(*args)` (kept when it fits)."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item
        item = read(*args)
        for arr in item:
            arr.flags.writeable = False
        size = item[0].nbytes + item[1].nbytes
        if size <= self.max_bytes:
            self._items[key] = item
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (data, valid) = self._items.popitem(last=False)
                self.nbytes -= data.nbytes + valid.nbytes
        return item


@contextlib.contextmanager
def _pixels_of(scene: Scene) -> Iterator[None]:
    """Name the file when its pixels cannot be read (a truncated or damaged GeoTIFF passes the
    header checks of `open_scene` and only fails here)."""
    from rasterio.errors import RasterioError

    try:
        yield
    except RasterioError as err:
        raise InputError(
            f"{scene.path}: pixels cannot be read ({' '.join(str(err).split())}); the file is truncated or "
            "damaged, expected a complete GeoTIFF"
        ) from err


def _dataset_mask(vrt: Any, **kwargs: Any) -> np.ndarray:
    """Validity from the nodata value (GDAL warns when the warped VRT also carries an alpha band)."""
    from rasterio.errors import NodataShadowWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataShadowWarning)
        return vrt.dataset_mask(**kwargs) > 0


def _apply(data: np.ndarray, scale: list[tuple[float, float]]) -> np.ndarray:
    """bands x h x w native -> h x w x bands float32 in [0, 1]."""
    out = np.empty((data.shape[1], data.shape[2], data.shape[0]), dtype=np.float32)
    for k, (offset, div) in enumerate(scale):
        out[..., k] = to_unit(data[k].astype(np.float32) - np.float32(offset), div)
    return out
