"""Which loader reads a given path: detection by layout, and one `open_source` entry point.

Detection order (first match wins) for a folder:
  world.json -> synthetic; LevirCCcaptions.json or images/{split}/A -> levircc;
  500_2000/ + 500_2010/ -> dubaiccd; before/ + after/ -> folder; .tif/.tiff files -> geotiff.
Several paths, or one .tif/.tiff file among them, always mean a GeoTIFF series.

`SourceOptions` holds the source options as a person types them (the CLI's `--tile-size`,
`--pairing 0,2;1,2`, `--band-names swir1,nir,red`, ...) and turns them into each loader's arguments,
so every command that reads a source shares one set of options and one set of rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textitsr.data.pairs import SPLITS, PairSource
from textitsr.errors import InputError

SOURCE_KINDS = ("levircc", "dubaiccd", "folder", "geotiff", "synthetic")


def detect_kind(root: Path | Sequence[Path]) -> str:
    """The source kind of a path (or list of GeoTIFF paths), from its layout; InputError if none fits."""
    if not isinstance(root, str | Path):
        paths = [Path(p) for p in root]
        if len(paths) != 1:
            return "geotiff"
        root = paths[0]
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: not found; expected a dataset folder or GeoTIFF files")
    if root.is_file():
        if root.suffix.lower() in (".tif", ".tiff"):
            return "geotiff"
        if root.name == "world.json":
            return "synthetic"
        if root.name == "LevirCCcaptions.json":
            return "levircc"
        raise InputError(f"{root}: cannot tell the source type of this file; expected a folder or GeoTIFFs")
    if (root / "world.json").is_file():
        return "synthetic"
    if (root / "LevirCCcaptions.json").is_file() or any((root / "images" / s / "A").is_dir() for s in SPLITS):
        return "levircc"
    if (root / "500_2000").is_dir() and (root / "500_2010").is_dir():
        return "dubaiccd"
    if (root / "before").is_dir() and (root / "after").is_dir():
        return "folder"
    if any(p.suffix.lower() in (".tif", ".tiff") for p in root.iterdir()):
        return "geotiff"
    raise InputError(
        f"{root}: unknown layout; expected LEVIR-CC (LevirCCcaptions.json + images/), Dubai-CCD "
        "(500_2000/, 500_2010/), a pairs folder (before/, after/), GeoTIFF scenes, or a synthetic world"
    )


def open_source(root: Path | Sequence[Path], kind: str | None = None, **options: Any) -> PairSource:
    """Open any supported source as a `PairSource`; `kind` None detects it; options go to the loader."""
    kind = kind or detect_kind(root)
    if kind not in SOURCE_KINDS:
        raise InputError(f"source kind {kind!r}: expected one of {', '.join(SOURCE_KINDS)}")
    if kind == "geotiff":
        from textitsr.data.geotiff import GeoTiffSource

        return GeoTiffSource(root, **options)
    if not isinstance(root, str | Path):
        roots = list(root)
        if len(roots) != 1:
            raise InputError(f"{kind} source: expected one root folder, got {len(roots)} paths")
        root = roots[0]
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: not found; expected a {kind} dataset root")
    if kind == "levircc":
        from textitsr.data.levircc import LevirCCSource

        if root.is_file():
            return LevirCCSource(root.parent, captions_file=root, **options)
        return LevirCCSource(root, **options)
    if kind == "dubaiccd":
        from textitsr.data.dubaiccd import DubaiCCDSource

        return DubaiCCDSource(root, **options)
    if kind == "folder":
        from textitsr.data.folder import FolderSource

        return FolderSource(root, **options)
    from textitsr.data.world import SyntheticSource

    return SyntheticSource(root, **options)


#: Loaders of captioned layouts (they take on_missing; all but LEVIR-CC take band names and display).
CAPTIONED_KINDS = ("levircc", "dubaiccd", "folder")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None


def parse_pairing(text: str | None) -> str | list[tuple[int, ...]] | None:
    """--pairing text -> GeoTiffOptions.pairing: "consecutive", "all", or 'I,J;I,J' index pairs."""
    if text is None or text in ("consecutive", "all"):
        return text
    try:
        return [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
    except ValueError as err:
        raise InputError(f"--pairing {text!r}: expected consecutive, all, or 'I,J;I,J'") from err


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source, as given on the command line (None: the loader's default)."""

    #: levircc, dubaiccd, folder, geotiff, synthetic; None -> detected from the path.
    kind: str | None = None
    #: LEVIR-CC / Dubai-CCD / folder: leave out pairs whose images are missing.
    skip_missing: bool = False
    #: GeoTIFF: tile side in px.
    tile_size: int | None = None
    #: GeoTIFF: consecutive, all, or 'I,J;I,J' (indices in date order).
    pairing: str | None = None
    #: Names of the files' bands, comma-separated (e.g. swir1,nir,red,green).
    band_names: str | None = None
    #: GeoTIFF: bands to keep, comma-separated.
    bands: str | None = None
    #: Display composite: rgb, false-colour, cir, or three band names.
    display: str | None = None
    #: GeoTIFF: scaling per scene (gain, percentile, none).
    stretch: str | None = None
    #: GeoTIFF: skip tiles with a larger nodata fraction.
    max_nodata: float | None = None

    def resolve(self, root: Path | Sequence[Path]) -> tuple[str, dict[str, Any]]:
        """(kind, keyword arguments of that kind's loader) for a source at `root`."""
        kind = self.kind or detect_kind(root)
        if kind == "geotiff":
            return kind, self.geotiff_options() | self._given(pairing=parse_pairing(self.pairing))
        if kind in CAPTIONED_KINDS:
            options: dict[str, Any] = {"on_missing": "skip" if self.skip_missing else "error"}
            if kind != "levircc":
                options |= {"band_names": _names(self.band_names), "display": self.display}
            return kind, options
        return kind, {}

    def geotiff_options(self) -> dict[str, Any]:
        """GeoTiffOptions fields given (pairing aside: each series reader parses its own)."""
        return self._given(tile_size=self.tile_size, band_names=_names(self.band_names),
                           bands=_names(self.bands), display=self.display, stretch=self.stretch,
                           max_nodata=self.max_nodata)

    @staticmethod
    def _given(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}  # defaults live in GeoTiffOptions

    def open_stac(self, url: str, collection: str | None = None, bbox: str | None = None,
                  datetime: str | None = None, assets: str | None = None) -> PairSource:
        """The pairs of a STAC catalog or API (`textitsr.data.stac`), with these GeoTIFF options;
        `bbox` 'W,S,E,N' and `assets` 'red,green,blue' as typed."""
        from textitsr.data.stac import StacQuery, StacSource, parse_assets, parse_bbox

        query = StacQuery(collection=collection, bbox=parse_bbox(bbox), datetime=datetime,
                          assets=parse_assets(assets), pairing=self.pairing or "consecutive")
        return StacSource(url, query, **self.geotiff_options())

    def open(self, root: Path | Sequence[Path]) -> PairSource:
        """The source at `root` (a folder, a file, or a list of GeoTIFF paths) read with these options."""
        if not isinstance(root, str | Path):
            roots = list(root)
            root = roots[0] if len(roots) == 1 else roots
        kind, options = self.resolve(root)
        return open_source(root, kind=kind, **options)
