"""The real scenes shipped with the demo: public-domain crops of the NAIP and Landsat time series.

Why: the demo archive should show real imagery on first run, not only the procedural world. The
crops live in `data/real-scenes/` (US public domain imagery via opengeos/data, MIT; see the PROVENANCE
file there) and are ingested by `prepare_demo` like any GeoTIFF series. They were cut once from
../shared/data/geo with `python -m textitsr.data.real_scenes` (windowed reads, DEFLATE, georeferencing kept).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textitsr.config import REPO_ROOT, SHARED_DATA_DIR

SCENES_DIR = REPO_ROOT / "data" / "real-scenes"


@dataclass(frozen=True)
class RealSeries:
    """One shipped series: its folder, the window cut from the source, and how the demo ingests it."""

    name: str
    source: str  #: folder under ../shared/data
    window: tuple[int, int, int, int]  #: col_off, row_off, width, height in the source grid
    options: dict[str, Any] = field(default_factory=dict)  #: GeoTiffSource options


REAL_SERIES = (
    # North Dakota prairie potholes, 10 NAIP dates 2009-2020 (RGBN, ~1 m): ponds grow and shrink.
    RealSeries("naip", "geo/naip", (160, 100, 512, 512), {"pairing": "consecutive"}),
    # Pucallpa, Peru, 8 Landsat dates 1985-2020 (SWIR1, NIR, red, green; 30 m): forest cleared.
    RealSeries(
        "landsat",
        "geo/landsat",
        (0, 0, 697, 377),
        {
            "band_names": ("swir1", "nir", "red", "green"),
            "display": "false-colour",
            "tile_size": 128,
            "pairing": [(0, 7), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (0, 4), (4, 7)],
        },
    ),
)


def series_sources() -> list[Any]:
    """GeoTiffSources of the shipped series (the demo appends them to its store)."""
    from textitsr.data.geotiff import GeoTiffSource

    return [GeoTiffSource(SCENES_DIR / s.name, **s.options) for s in REAL_SERIES]


def cut_scenes(shared: Path = SHARED_DATA_DIR, out: Path = SCENES_DIR) -> list[Path]:
    """Write the shipped crops from the full series in `shared` (one-off; the result is committed)."""
    import rasterio
    from rasterio.windows import Window

    from textitsr.atomic import atomic_path

    written = []
    for series in REAL_SERIES:
        for src_path in sorted((Path(shared) / series.source).glob("*.tif")):
            dest = Path(out) / series.name / src_path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(src_path) as src:
                window = Window(*series.window)
                profile = src.profile | {
                    "width": series.window[2],
                    "height": series.window[3],
                    "transform": src.window_transform(window),
                    "compress": "deflate",
                    "predictor": 2,
                    "tiled": False,
                }
                data = src.read(window=window)
                tags = src.tags()
                descriptions = src.descriptions
                with atomic_path(dest) as tmp, rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(data)
                    dst.update_tags(**tags)
                    for i, d in enumerate(descriptions, start=1):
                        if d:
                            dst.set_band_description(i, d)
            written.append(dest)
    return written


if __name__ == "__main__":
    for path in cut_scenes(Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED_DATA_DIR):
        print(path, path.stat().st_size)
