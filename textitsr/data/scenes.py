"""The scenes of a GeoTIFF series: each file opened, checked, dated and named once.

A scene is dated from its file name (``m_..._20120731.tif``, ``2012-07-31``, ``1985.tif``) or its
tags (``TIFFTAG_DATETIME``, ``ACQUISITION_DATE``, ...); its bands are named from the band
descriptions, else the given `band_names`, else by count (1 grey, 3 RGB, 4 RGB+NIR). `geotiff.py`
turns a series of scenes into tile pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from textitsr.data.imageio import check_scene_size, default_band_names, normalise_band_name
from textitsr.data.pairs import Bounds, id_part
from textitsr.errors import InputError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
_DATE_TAGS = ("ACQUISITION_DATE", "DATE_ACQUIRED", "ACQUISITIONDATE", "DATE", "TIFFTAG_DATETIME")
_FULL_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_.:]?(0[1-9]|1[0-2])[-_.:]?(0[1-9]|[12]\d|3[01])(?!\d)")
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")


@dataclass
class Scene:
    """One checked, dated GeoTIFF of the series."""

    path: Path
    date: str | None
    token: str
    crs: Any
    bounds: Bounds
    res: tuple[float, float]
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]

    @property
    def date_precision(self) -> str | None:
        """"year" when only the year is known (a bare year: the date reads YYYY-01-01), "day" when
        the day is, None when undated: pages show "1985", not a made-up 1985-01-01."""
        if not self.date:
            return None
        return "year" if self.token == self.date[:4] else "day"


def date_precision(text: str) -> str | None:
    """What a file name or tag tells about its date: "day", "year" (a bare year) or None (no date)."""
    parsed = _parse_date(text)
    if parsed is None:
        return None
    return "year" if parsed[1] == parsed[0][:4] else "day"


def _parse_date(text: str) -> tuple[str, str] | None:
    """(ISO date, token) from a name or tag; a bare year gives YYYY-01-01 with token YYYY."""
    if m := _FULL_DATE.search(text):
        try:
            iso = date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            iso = None
        if iso:
            return iso, iso.replace("-", "")
    if m := _YEAR.search(text):
        return f"{m[1]}-01-01", m[1]
    return None


def open_scene(path: Path, band_names: tuple[str, ...] | None) -> Scene:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    if not path.is_file():
        raise InputError(f"{path}: GeoTIFF file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # refused below, with the file named
            src = rasterio.open(path)
    except RasterioIOError as err:
        raise InputError(f"{path}: not a readable GeoTIFF ({err}); expected a GeoTIFF scene") from err
    with src:
        if src.driver not in ("GTiff", "COG", "VRT"):  # VRT: a STAC item's assets stacked as bands
            raise InputError(f"{path}: is a {src.driver} file, expected a GeoTIFF")
        check_scene_size(str(path), src.width, src.height)
        if src.crs is None:
            raise InputError(
                f"{path}: has no coordinate reference system (unknown CRS); expected a georeferenced GeoTIFF"
            )
        if src.transform.is_identity or src.transform.b != 0 or src.transform.d != 0:
            raise InputError(f"{path}: has no usable north-up geotransform; expected a georeferenced GeoTIFF")
        try:
            from rasterio.warp import transform_bounds

            transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        except Exception as err:  # noqa: BLE001 - any PROJ failure means the CRS is unusable
            raise InputError(f"{path}: CRS {src.crs} cannot be transformed to lon/lat ({err})") from err
        desc = src.descriptions
        if band_names:
            names = tuple(normalise_band_name(b) for b in band_names)
            if len(names) != src.count:
                raise InputError(f"{path}: has {src.count} band(s) but band names {list(names)} were given")
        elif all(desc):
            names = tuple(normalise_band_name(d) for d in desc)
        else:
            names = default_band_names(src.count)
        if len(set(names)) != len(names):
            raise InputError(f"{path}: duplicate band names {list(names)}")
        parsed = _parse_date(path.stem)
        if parsed is None:
            tags = src.tags()
            parsed = next((p for t in _DATE_TAGS if t in tags and (p := _parse_date(tags[t]))), None)
        iso, token = parsed if parsed else (None, id_part(path.stem))
        return Scene(
            path=path,
            date=iso,
            token=token,
            crs=src.crs,
            bounds=tuple(src.bounds),
            res=src.res,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            band_names=names,
        )


def place_name(scenes: list[Scene]) -> str:
    stems = [re.sub(re.escape(s.token), "", s.path.stem, count=1) if s.date else s.path.stem for s in scenes]
    prefix = stems[0]
    for s in stems[1:]:
        while not s.startswith(prefix):
            prefix = prefix[:-1]
    prefix = re.sub(r"[^A-Za-z0-9]+", "_", prefix).strip("_")
    return prefix or re.sub(r"[^A-Za-z0-9]+", "_", scenes[0].path.resolve().parent.name).strip("_") or "scene"


#: A date written in a file name: 2018, 20180601, 2018-06-01, 2018_06_01.
DATE_IN_NAME = re.compile(r"(?<![0-9])(?:19|20)\d{2}(?:[-_]?\d{2}[-_]?\d{2})?(?![0-9])")


def place_from_names(paths: Sequence[Path | str]) -> str:
    """A readable place name for scenes of one place: their file names' common part without dates
    (`naip_20180601.tif`, `naip_20200601.tif` -> `naip`; `1985.tif`, `2020.tif` -> their folder's
    name), never a fragment of a date or an upload time stamp."""
    stems = [DATE_IN_NAME.sub("", Path(p).stem) for p in paths]
    prefix = stems[0] if stems else ""
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    place = re.sub(r"[^A-Za-z0-9]+", "_", prefix).strip("_")
    if len(place) >= 3:
        return place
    folder = re.sub(r"[^A-Za-z0-9]+", "_", Path(paths[0]).parent.name).strip("_") if paths else ""
    timestamp = re.fullmatch(r"[0-9_]+", folder) is not None  # an upload folder, a date
    return folder if len(folder) >= 3 and not timestamp else (place or "scene")


def expand_paths(paths: Path | Sequence[Path]) -> list[Path]:
    """Files of the series: the .tif/.tiff files of a folder, or the given files."""
    items = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    files: list[Path] = []
    for p in items:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in GEOTIFF_SUFFIXES)
            if not found:
                raise InputError(f"{p}: folder has no .tif/.tiff files; expected GeoTIFF scenes of one place")
            files += found
        else:
            files.append(p)
    return files
