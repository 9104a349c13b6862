"""Which loader reads a given path: detection by layout, and one `open_source` entry point.

Detection order (first match wins) for a folder:
  world.json -> synthetic; LevirCCcaptions.json or images/{split}/A -> levircc;
  500_2000/ + 500_2010/ -> dubaiccd; before/ + after/ -> folder; .tif/.tiff files -> geotiff.
Several paths, or one .tif/.tiff file among them, always mean a GeoTIFF series.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    from textitsr.data.synthetic import SyntheticSource

    return SyntheticSource(root, **options)
