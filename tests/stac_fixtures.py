"""Small STAC catalogs of Cloud-Optimized GeoTIFFs cut from ../shared/data/geo (NAIP, Landsat), and a
local HTTP server with range requests that serves them (127.0.0.1 only, stops itself)."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

#: NAIP scenes of one place in three years, and Landsat scenes of another place.
NAIP_SCENES = ("m_4709963_se_14_1_20120731.tif", "m_4709963_se_14_1_20140720.tif",
               "m_4709963_se_14_1_20160816.tif")
LANDSAT_SCENES = ("1985.tif", "1990.tif", "1995.tif")
NAIP_BANDS = ("red", "green", "blue", "nir")
LANDSAT_BANDS = ("swir1", "nir", "red", "green")
#: Side (px) of the crops: 2 x 2 tiles of 64 px.
CROP = 160
#: A server stops by itself after this many seconds, whatever the test does.
SERVER_LIFETIME_S = 300


def write_cog(data: np.ndarray, profile: dict, dst: Path, descriptions: Sequence[str] | None = None) -> Path:
    """bands x h x w `data` with `profile`'s CRS/transform -> a COG (64 px blocks and overviews)."""
    from rasterio.io import MemoryFile
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    prof = dict(profile, driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                dtype=str(data.dtype))
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave", "photometric"):
        prof.pop(key, None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as mem, mem.open(**prof) as tmp:
        tmp.write(data)
        if descriptions:
            tmp.descriptions = tuple(descriptions)
        out = dict(cog_profiles.get("deflate"), blockxsize=64, blockysize=64)
        cog_translate(tmp, str(dst), out, quiet=True, in_memory=True, overview_level=1)
    return dst


def crop(path: Path, col: int = 300, row: int = 250, size: int = CROP, crs: str | None = None
         ) -> tuple[np.ndarray, dict]:
    """A window of a scene (optionally warped to `crs`): (bands x h x w, profile)."""
    import rasterio
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    with rasterio.open(path) as src:
        if crs is None:
            win = Window(col, row, size, size)
            return src.read(window=win), dict(src.profile, transform=window_transform(win, src.transform))
        with WarpedVRT(src, crs=crs) as vrt:
            return vrt.read(), dict(src.profile, crs=vrt.crs, transform=vrt.transform)


def lonlat_bbox(profile: dict, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    return tuple(transform_bounds(profile["crs"], "EPSG:4326", *_bounds(profile, shape)))


def _bounds(profile: dict, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    t = profile["transform"]
    h, w = shape
    xs, ys = (t.c, t.c + t.a * w), (t.f, t.f + t.e * h)
    return min(xs), min(ys), max(xs), max(ys)


@dataclass
class ItemSpec:
    """One item of a test catalog: id, date, footprint, asset key -> COG path, properties."""

    id: str
    when: str
    bbox: tuple[float, float, float, float]
    assets: dict[str, str]
    collection: str
    properties: dict = field(default_factory=dict)
    band_names: dict[str, list[str]] = field(default_factory=dict)


def write_catalog(root: Path, specs: Sequence[ItemSpec]) -> Path:
    """A self-contained static catalog (collections of items, relative asset hrefs) under `root`."""
    import pystac

    catalog = pystac.Catalog(id="test-archive", description="COGs cut from NAIP and Landsat scenes")
    for name in dict.fromkeys(s.collection for s in specs):
        mine = [s for s in specs if s.collection == name]
        w = min(s.bbox[0] for s in mine), min(s.bbox[1] for s in mine)
        e = max(s.bbox[2] for s in mine), max(s.bbox[3] for s in mine)
        times = sorted(datetime.fromisoformat(s.when).replace(tzinfo=UTC) for s in mine)
        extent = pystac.Extent(pystac.SpatialExtent([[w[0], w[1], e[0], e[1]]]),
                               pystac.TemporalExtent([[times[0], times[-1]]]))
        collection = pystac.Collection(id=name, description=f"{name} test scenes", extent=extent)
        for s in mine:
            x0, y0, x1, y1 = s.bbox
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            geometry = {"type": "Polygon", "coordinates": [ring]}
            item = pystac.Item(id=s.id, geometry=geometry, bbox=list(s.bbox),
                               datetime=datetime.fromisoformat(s.when).replace(tzinfo=UTC),
                               properties=dict(s.properties))
            for key, href in s.assets.items():
                extra = {}
                if key in s.band_names:
                    extra["eo:bands"] = [{"name": b, "common_name": b} for b in s.band_names[key]]
                item.add_asset(key, pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"],
                                                 extra_fields=extra))
            collection.add_item(item)
        catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def naip_specs(geo: Path, cogs: Path) -> list[ItemSpec]:
    """Three NAIP items of one place, one single-band COG per band."""
    specs = []
    for k, name in enumerate(NAIP_SCENES):
        data, profile = crop(geo / "naip" / name)
        assets = {b: str(write_cog(data[i : i + 1], profile, cogs / f"{Path(name).stem}_{b}.tif"))
                  for i, b in enumerate(NAIP_BANDS)}
        when = re.search(r"(\d{8})", name)[1]
        specs.append(ItemSpec(id=Path(name).stem, when=f"{when[:4]}-{when[4:6]}-{when[6:]}",
                              bbox=lonlat_bbox(profile, data.shape[1:]), assets=assets, collection="naip",
                              properties={"eo:cloud_cover": float(k * 5), "gsd": 5.0}))
    return specs


def landsat_specs(geo: Path, cogs: Path) -> list[ItemSpec]:
    """Three Landsat items of another place, one 4-band 'visual' COG each, bands named in eo:bands."""
    specs = []
    for name in LANDSAT_SCENES:
        data, profile = crop(geo / "landsat" / name, col=200, row=100)
        cog = write_cog(data, profile, cogs / f"landsat_{Path(name).stem}.tif")
        specs.append(ItemSpec(id=f"landsat_{Path(name).stem}", when=f"{Path(name).stem}-07-01",
                              bbox=lonlat_bbox(profile, data.shape[1:]), assets={"visual": str(cog)},
                              collection="landsat", properties={"eo:cloud_cover": 1.0, "gsd": 30.0},
                              band_names={"visual": list(LANDSAT_BANDS)}))
    return specs


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves one folder with HTTP range requests; appends "method path status bytes" of every answer
    to a log file."""

    daemon_threads = True

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log_path = Path(root), Path(log)
        super().__init__(("127.0.0.1", 0), _RangeHandler)

    def record(self, *fields: object) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write("\t".join(map(str, fields)) + "\n")


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def _answer(self, body: bool) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.root / rel).resolve()
        if not path.is_relative_to(self.server.root.resolve()) or not path.is_file():
            self.server.record(self.command, rel, 404, 0)
            self.send_error(404)
            return
        data = path.read_bytes()
        status, start, end = 200, 0, len(data) - 1
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
            start, end = int(m[1]), min(int(m[2] or len(data) - 1), len(data) - 1)
            if start >= len(data):
                self.send_error(416)
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        self.server.record(self.command, rel, status, end - start + 1 if body else 0)
        if body:
            self.wfile.write(data[start : end + 1])

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._answer(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(False)

    def do_POST(self) -> None:  # noqa: N802 - a STAC API search: the served file is the answer
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(True)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Served:
    """A running server process: its base URL and the answers it logged so far."""

    url: str
    log_path: Path

    @property
    def log(self) -> list[tuple[str, str, int, int]]:
        lines = self.log_path.read_text("utf-8").splitlines() if self.log_path.is_file() else []
        return [(m, p, int(s), int(n)) for m, p, s, n in (line.split("\t") for line in lines)]


@contextmanager
def serve(root: Path) -> Iterator[Served]:
    """A RangeServer on 127.0.0.1 in its own process (GDAL may hold this process's interpreter lock
    while it waits for an answer) for the block; it also stops by itself after SERVER_LIFETIME_S."""
    import subprocess
    import sys
    import tempfile
    import time

    work = Path(tempfile.mkdtemp(prefix="stac-server-"))
    port_file, log = work / "port", work / "requests.log"
    proc = subprocess.Popen([sys.executable, __file__, str(root), str(port_file), str(log)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"test HTTP server did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield Served(f"http://127.0.0.1:{int(port_file.read_text())}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _main(root: str, port_file: str, log: str) -> None:
    server = RangeServer(Path(root), Path(log))
    timer = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    timer.daemon = True
    timer.start()
    Path(port_file).write_text(str(server.server_address[1]))
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


def write_api(root: Path, url: str, catalog: Path, collection: str) -> str:
    """A STAC API landing page and a search answer (all items of `collection`, absolute hrefs) as
    files under `root`, for the range server at `url`; returns the landing page URL."""
    import json

    import pystac

    walked = pystac.read_file(str(catalog)).get_items(recursive=True)
    items = [i for i in walked if i.collection_id == collection]
    features = []
    for item in items:
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in item.assets.items():
            rel = Path(asset.get_absolute_href()).relative_to(catalog.parent)
            doc["assets"][key]["href"] = f"{url}/{rel.as_posix()}"
        doc["links"] = []
        features.append(doc)
    (root / "search").write_text(json.dumps({"type": "FeatureCollection", "features": features, "links": []}))
    spec = "https://api.stacspec.org/v1.0.0"
    landing = {"type": "Catalog", "id": "api", "stac_version": "1.0.0", "description": "test API",
               "conformsTo": [f"{spec}/core", f"{spec}/item-search"],
               "links": [{"rel": "self", "href": f"{url}/api.json"},
                         {"rel": "root", "href": f"{url}/api.json"},
                         {"rel": "search", "href": f"{url}/search", "type": "application/geo+json",
                          "method": "GET"}]}
    (root / "api.json").write_text(json.dumps(landing))
    return f"{url}/api.json"


if __name__ == "__main__":
    import sys

    _main(*sys.argv[1:4])
