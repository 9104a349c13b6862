"""A STAC catalog or API -> time series of one place each -> the GeoTIFF series reader's tile pairs.

How a catalog becomes pairs:

1. Items: a static catalog or collection (a local path or an http(s) URL, read with pystac) is
   walked recursively; a STAC API (its landing page conforms to item search) is searched with
   pystac-client. Either way `collection`, `bbox` (lon/lat W,S,E,N) and `datetime` (``A/B``, ``..``
   open) are then applied to every item, so both routes keep the same items.
2. Assets: ``visual`` (one multi-band asset) by default, else red/green/blue when the item has them;
   `assets` names them (``red,green,blue,nir``: one single-band asset each, on one grid). Each asset
   is opened as a Cloud-Optimized GeoTIFF through GDAL (``/vsicurl/`` for http: range reads of
   the header and of each window, never the whole file). An item's chosen assets become one small
   VRT file (kept under the user's cache folder, rewritten only when it changes) that the series
   reader opens like any GeoTIFF, so tiling, warping, scaling and nodata rules are those of
   `textitsr.data.geotiff`.
3. Places: items are grouped by footprint (an item joins the first group whose first footprint
   it covers by half or more); each group of two or more items is one series.
4. Pairs within a place: ``consecutive`` (default) or ``all`` date pairs, ``yearly`` (one item per
   year, the least cloudy, paired with the next year's) or ``season`` (each item with the first item
   of a later year within 45 days of the same day of the year).

Each pair's `location` keeps what the catalog said about both items (``location["stac"]``: ids,
collection, item link, datetime, cloud cover, GSD, asset hrefs), so the store, the API's records and
the app's inspector show where a pair came from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from textitsr.config import user_cache_dir
from textitsr.data.geotiff import GeoTiffOptions, GeoTiffSource
from textitsr.data.imageio import normalise_band_name
from textitsr.data.pairs import BitemporalPair, PairSourceBase, id_part
from textitsr.errors import InputError

PAIRINGS = ("consecutive", "all", "yearly", "season")
#: `season` pairs items of later years taken within this many days of the same day of the year.
SEASON_DAYS = 45
#: An item joins a place when its footprint covers this fraction of the place's first footprint.
SAME_PLACE_OVERLAP = 0.5
#: At most this many items are read from a catalog or API (a bound on a mistyped query).
MAX_ITEMS = 2000
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}
#: GDAL settings for reading COGs over HTTP: a few retries. (Directory listing is left on: turning it
#: off process-wide would also hide local GeoTIFFs' sidecar overviews and masks.)
GDAL_HTTP = {"GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "0.5"}


@dataclass(frozen=True)
class StacQuery:
    """Which items of a catalog or API to read, which assets, and how to pair them."""

    collection: str | None = None
    #: lon/lat (west, south, east, north).
    bbox: tuple[float, float, float, float] | None = None
    #: ISO interval "A/B" (".." or nothing for an open end), or one date.
    datetime: str | None = None
    #: Asset keys; None: "visual", else red/green/blue.
    assets: tuple[str, ...] | None = None
    pairing: str = "consecutive"
    max_items: int = MAX_ITEMS


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """'W,S,E,N' (lon/lat degrees) -> floats; InputError naming --bbox otherwise."""
    if text is None:
        return None
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError as err:
        raise InputError(f"--bbox {text!r}: expected four numbers W,S,E,N in degrees") from err
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InputError(f"--bbox {text!r}: expected west < east in -180..180 and south < north in -90..90")
    return w, s, e, n


def parse_assets(text: str | None) -> tuple[str, ...] | None:
    names = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    return names or None


def _day(text: str, end: bool) -> date | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError as err:
        raise InputError(f"--datetime {text!r}: expected an ISO date (YYYY-MM-DD), '..' or 'A/B'") from err


def parse_interval(text: str | None) -> tuple[date | None, date | None]:
    """'A/B' -> (first day, last day), either open; one date -> that day."""
    if not text:
        return None, None
    parts = text.split("/")
    if len(parts) == 1:
        return _day(parts[0], False), _day(parts[0], True)
    if len(parts) != 2:
        raise InputError(f"--datetime {text!r}: expected 'A/B' with ISO dates or '..'")
    start, end = _day(parts[0], False), _day(parts[1], True)
    if start and end and end < start:
        raise InputError(f"--datetime {text!r}: the interval ends before it starts")
    return start, end


@dataclass
class StacScene:
    """One item's chosen assets, checked, as a VRT the series reader opens."""

    item_id: str
    collection: str | None
    date: str
    bbox: tuple[float, float, float, float]
    info: dict[str, Any]
    #: The VRT stacking the chosen assets, and their hrefs by asset key.
    vrt_xml: str = ""
    assets: dict[str, str] = field(default_factory=dict)


def gdal_path(href: str) -> str:
    """What GDAL opens for an asset href: /vsicurl/ for http(s), the path itself for local files."""
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("file://"):
        return href[len("file://"):]
    if href.startswith("s3://"):
        return f"/vsis3/{href[5:]}"
    return href


def use_http_settings() -> None:
    """Configure GDAL for reads over HTTP in this process (settings already given are kept): the
    series reader and the map tiler open the VRTs later, outside any `rasterio.Env`."""
    for key, value in GDAL_HTTP.items():
        os.environ.setdefault(key, value)


def read_items(url: str, query: StacQuery) -> list[Any]:
    """The items of a static catalog/collection/item, or of a STAC API search, that match `query`."""
    import pystac

    try:
        root = pystac.read_file(url)
    except Exception as err:  # noqa: BLE001 - urllib, JSON and STAC errors all mean "not a catalog here"
        raise InputError(
            f"{url}: cannot be read as a STAC catalog, collection or item ({_short(err)})"
        ) from err
    if isinstance(root, pystac.Item):
        items: Sequence[Any] = [root]
    elif _is_api(root):
        items = _search(url, query)
    else:
        items = _limited(root.get_items(recursive=True), query.max_items, url)
    return [item for item in items if _matches(item, query)]


def _is_api(root: Any) -> bool:
    conforms = root.extra_fields.get("conformsTo") or []
    return any("item-search" in str(c) for c in conforms) and any(
        link.rel == "search" for link in root.links
    )


def _search(url: str, query: StacQuery) -> list[Any]:
    from pystac_client import Client

    try:
        search = Client.open(url).search(
            collections=[query.collection] if query.collection else None, bbox=query.bbox,
            datetime=query.datetime, max_items=query.max_items,
        )
        return list(search.items())
    except Exception as err:  # noqa: BLE001 - any API failure is reported as one line
        raise InputError(f"{url}: STAC API search failed ({_short(err)})") from err


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def _limited(items: Iterator[Any], limit: int, url: str) -> list[Any]:
    out = []
    for item in items:
        if len(out) >= limit:
            raise InputError(f"{url}: more than {limit} items; expected --collection, --bbox or --datetime "
                             "to narrow the catalog")
        out.append(item)
    return out


def _matches(item: Any, query: StacQuery) -> bool:
    if query.collection and item.collection_id != query.collection:
        return False
    if query.bbox and item.bbox:
        w, s, e, n = query.bbox
        iw, is_, ie, in_ = item.bbox[:4] if len(item.bbox) == 4 else (*item.bbox[:2], *item.bbox[3:5])
        if ie <= w or iw >= e or in_ <= s or is_ >= n:
            return False
    start, end = parse_interval(query.datetime)
    day = _item_day(item)
    return not ((start and day < start) or (end and day > end))


def _item_day(item: Any) -> date:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InputError(f"item {item.id!r}: has no datetime; expected dated items for a time series")
    return when.date()


def _chosen_assets(item: Any, names: tuple[str, ...] | None) -> tuple[str, ...]:
    have = list(item.assets)
    if names is None:
        if "visual" in item.assets:
            return ("visual",)
        if all(b in item.assets for b in ("red", "green", "blue")):
            return ("red", "green", "blue")
        raise InputError(f"item {item.id!r} ({_where(item)}): no 'visual' asset and no red/green/blue assets "
                         f"(it has {', '.join(have) or 'none'}); expected --assets naming some of these")
    missing = [n for n in names if n not in item.assets]
    if missing:
        raise InputError(f"item {item.id!r} ({_where(item)}): no asset {', '.join(map(repr, missing))} "
                         f"(it has {', '.join(have) or 'none'}); expected --assets naming some of these")
    return names


def _where(item: Any) -> str:
    return item.get_self_href() or "catalog"


def _asset_band_names(asset: Any, count: int) -> list[str | None]:
    """Band names the catalog gives an asset (eo:bands common names, or bands names)."""
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    names = [b.get("common_name") or b.get("name") for b in bands if isinstance(b, dict)]
    return names if len(names) == count else [None] * count


def _open_asset(item: Any, key: str) -> dict[str, Any]:
    """Grid, dtype and band facts of one asset, read from its header (range reads over HTTP)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    href = item.assets[key].get_absolute_href() or item.assets[key].href
    what = f"item {item.id!r} asset {key!r}"
    path = gdal_path(href)
    if "://" not in href and not Path(path).is_file():
        raise InputError(f"{what}: {href} not found; expected the asset's COG file")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"{what}: {href} has no CRS; expected a georeferenced COG")
            return {"href": href, "path": path, "crs": src.crs, "transform": src.transform,
                    "width": src.width, "height": src.height, "count": src.count, "dtype": src.dtypes[0],
                    "nodata": src.nodata, "descriptions": src.descriptions, "block": src.block_shapes[0]}
    except RasterioIOError as err:
        raise InputError(f"{what}: {href} cannot be read ({_short(err)}); "
                         "expected a reachable Cloud-Optimized GeoTIFF") from err


def _scene_vrt(item: Any, keys: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The VRT XML of an item's assets stacked as bands, and their hrefs; InputError when the assets
    are not on one grid (mixed CRS, pixel size or extent)."""
    facts = {k: _open_asset(item, k) for k in keys}
    first_key = keys[0]
    ref = facts[first_key]
    for k, f in facts.items():
        if f["crs"] != ref["crs"]:
            raise InputError(f"item {item.id!r}: assets {first_key!r} ({ref['crs']}) and {k!r} ({f['crs']}) "
                             "are in different CRS; expected the chosen assets of an item on one grid")
        if (f["transform"], f["width"], f["height"]) != (ref["transform"], ref["width"], ref["height"]):
            raise InputError(f"item {item.id!r}: assets {first_key!r} and {k!r} differ in pixel size or "
                             "extent; expected the chosen assets of an item on one grid")
        if len(keys) > 1 and f["count"] != 1:
            raise InputError(f"item {item.id!r} asset {k!r}: has {f['count']} bands; expected one band per "
                             "asset when several assets are chosen")
        if f["dtype"] not in _GDAL_TYPES or f["dtype"] != ref["dtype"]:
            raise InputError(f"item {item.id!r} asset {k!r}: pixel type {f['dtype']}; expected "
                             f"{ref['dtype']} like {first_key!r}")
    root = ET.Element("VRTDataset", rasterXSize=str(ref["width"]), rasterYSize=str(ref["height"]))
    ET.SubElement(root, "SRS").text = ref["crs"].to_wkt()
    t = ref["transform"]
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v))
                                                          for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    meta = ET.SubElement(root, "Metadata")
    ET.SubElement(meta, "MDI", key="ACQUISITION_DATE").text = _item_day(item).isoformat()
    band = 0
    for k in keys:
        f = facts[k]
        names = _asset_band_names(item.assets[k], f["count"])
        for b in range(1, f["count"] + 1):
            band += 1
            name = k if len(keys) > 1 else (names[b - 1] or f["descriptions"][b - 1])
            el = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[f["dtype"]], band=str(band))
            if name:
                ET.SubElement(el, "Description").text = normalise_band_name(name)
            if f["nodata"] is not None:
                ET.SubElement(el, "NoDataValue").text = repr(float(f["nodata"]))
            src = ET.SubElement(el, "SimpleSource")
            ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = f["path"]
            ET.SubElement(src, "SourceBand").text = str(b)
            by, bx = f["block"]
            ET.SubElement(src, "SourceProperties", RasterXSize=str(f["width"]), RasterYSize=str(f["height"]),
                          DataType=_GDAL_TYPES[f["dtype"]], BlockXSize=str(bx), BlockYSize=str(by))
            rect = {"xOff": "0", "yOff": "0", "xSize": str(f["width"]), "ySize": str(f["height"])}
            ET.SubElement(src, "SrcRect", **rect)
            ET.SubElement(src, "DstRect", **rect)
    names = [el.findtext("Description") for el in root.iter("VRTRasterBand")]
    if not all(names) and len(names) not in (1, 3, 4):
        raise InputError(f"item {item.id!r}: {len(names)} bands without names; expected assets whose "
                         "bands the catalog names (eo:bands) or 1, 3 or 4 bands")
    return ET.tostring(root, encoding="unicode"), {k: f["href"] for k, f in facts.items()}


def _scene_info(item: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    props = item.properties
    gsd = props.get("gsd")
    if gsd is None:
        gsd = next((g for k in keys if (g := item.assets[k].extra_fields.get("gsd")) is not None), None)
    return {"id": item.id, "collection": item.collection_id, "href": item.get_self_href(),
            "datetime": (item.datetime or item.common_metadata.start_datetime).isoformat(),
            "cloud_cover": props.get("eo:cloud_cover"), "gsd": gsd}


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Fraction of footprint `a` covered by `b` (lon/lat boxes)."""
    w, s, e, n = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return 0.0 if e <= w or n <= s or area <= 0 else (e - w) * (n - s) / area


def group_by_place(scenes: list[StacScene]) -> list[list[StacScene]]:
    """Scenes grouped by footprint, each group in date order (then id)."""
    groups: list[list[StacScene]] = []
    for scene in sorted(scenes, key=lambda s: (s.date, s.item_id)):
        for group in groups:
            ref = group[0].bbox
            if min(_overlap(ref, scene.bbox), _overlap(scene.bbox, ref)) >= SAME_PLACE_OVERLAP:
                group.append(scene)
                break
        else:
            groups.append([scene])
    return groups


def pair_indices(scenes: list[StacScene], pairing: str) -> str | list[tuple[int, int]]:
    """GeoTiffOptions.pairing of one place's date-ordered scenes for a `PAIRINGS` name."""
    if pairing in ("consecutive", "all"):
        return pairing
    years = [int(s.date[:4]) for s in scenes]
    if pairing == "yearly":
        best: dict[int, int] = {}
        for i, s in enumerate(scenes):
            cloud = s.info.get("cloud_cover")
            key = math.inf if cloud is None else float(cloud)
            if years[i] not in best or key < _cloud(scenes[best[years[i]]]):
                best[years[i]] = i
        picks = [best[y] for y in sorted(best)]
        return list(zip(picks, picks[1:], strict=False))
    if pairing == "season":
        doy = [date.fromisoformat(s.date).timetuple().tm_yday for s in scenes]
        out = []
        for i in range(len(scenes)):
            j = next((j for j in range(i + 1, len(scenes)) if years[j] > years[i]
                      and min(abs(doy[i] - doy[j]), 365 - abs(doy[i] - doy[j])) <= SEASON_DAYS), None)
            if j is not None:
                out.append((i, j))
        return out
    raise InputError(f"--pairing {pairing!r}: expected one of {', '.join(PAIRINGS)} for a STAC source")


def _cloud(scene: StacScene) -> float:
    cloud = scene.info.get("cloud_cover")
    return math.inf if cloud is None else float(cloud)


def _write_if_changed(path: Path, text: str) -> None:
    """Keep the file (and so the source's fingerprint) when its content is unchanged."""
    from textitsr.atomic import atomic_write_text

    if path.is_file() and path.read_text("utf-8") == text:
        return
    atomic_write_text(path, text)


class StacSource(PairSourceBase):
    """Tile pairs of every place of a STAC catalog or API search (see the module docstring)."""

    name = "stac"

    def __init__(self, url: str, query: StacQuery | None = None, vrt_dir: Path | None = None,
                 **geotiff: Any) -> None:
        self.url = str(url)
        self.query = query = query or StacQuery()
        if query.pairing not in PAIRINGS:
            raise InputError(f"--pairing {query.pairing!r}: expected one of {', '.join(PAIRINGS)} for STAC")
        use_http_settings()
        items = read_items(self.url, query)
        if not items:
            raise InputError(f"{self.url}: no items match (collection={query.collection}, bbox={query.bbox}, "
                             f"datetime={query.datetime}); expected at least two items of one place")
        digest = hashlib.sha256(json.dumps([self.url, query.assets]).encode()).hexdigest()[:16]
        self.vrt_dir = Path(vrt_dir) if vrt_dir else user_cache_dir() / "stac" / digest
        scenes = []
        for item in items:
            keys = _chosen_assets(item, query.assets)
            if not item.bbox:
                raise InputError(f"item {item.id!r} ({_where(item)}): has no bbox; expected a footprint")
            b = item.bbox
            bbox = tuple(b[:4]) if len(b) == 4 else (b[0], b[1], b[3], b[4])
            xml, hrefs = _scene_vrt(item, keys)
            scenes.append(StacScene(item.id, item.collection_id, _item_day(item).isoformat(), bbox,
                                    _scene_info(item, keys), xml, hrefs))
        groups = [g for g in group_by_place(scenes) if len(g) >= 2]
        if not groups:
            raise InputError(f"{self.url}: no two of the {len(scenes)} matching items cover the same place "
                             "(their footprints do not overlap); expected a time series of one place")
        options = GeoTiffOptions(**{k: v for k, v in geotiff.items() if k != "pairing"})
        self.series: list[GeoTiffSource] = []
        self.scene_info: dict[str, dict[str, Any]] = {}
        for n, group in enumerate(groups):
            pairing = pair_indices(group, query.pairing)
            if not pairing:
                continue
            place = _place_name(group, n)
            paths = []
            for scene in group:
                path = self.vrt_dir / place / f"{scene.date}_{id_part(scene.item_id)}.vrt"
                _write_if_changed(path, scene.vrt_xml)
                self.scene_info[str(path)] = {**scene.info, "assets": scene.assets}
                paths.append(path)
            self.series.append(GeoTiffSource(paths, replace(options, place=place, pairing=pairing)))
        if not self.series:
            raise InputError(f"{self.url}: pairing {query.pairing!r} finds no pair of items in any place; "
                             "expected items of one place in different years (or another --pairing)")

    def __len__(self) -> int:
        return sum(len(s) for s in self.series)

    def paths(self) -> list[Path]:
        return [p for s in self.series for p in s.paths()]

    def count(self, split: str | None = None) -> int:
        return len(self) if split is None else 0

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        """Every place's pairs, each with the STAC facts of both items in `location["stac"]`."""
        if split is not None:
            return
        for series in self.series:
            for pair in series.pairs():
                loc = pair.location
                loc["kind"] = self.name
                loc["stac"] = {"catalog": self.url, "before": self.scene_info[loc["before"]],
                               "after": self.scene_info[loc["after"]]}
                pair.source = self.name
                yield pair


def _place_name(group: list[StacScene], n: int) -> str:
    ids = [s.item_id for s in group]
    prefix = ids[0]
    for i in ids[1:]:
        while not i.startswith(prefix):
            prefix = prefix[:-1]
    if any(len(i) > len(prefix) for i in ids):  # cut at a separator: "m_4709963_201" -> "m_4709963"
        prefix = re.sub(r"[^_.-]*$", "", prefix)
    prefix = id_part(prefix).strip("_-.")
    return prefix if len(prefix) >= 3 else f"{id_part(group[0].collection or 'place')}_{n}"
