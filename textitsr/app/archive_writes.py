"""What the pages write into the base archive: uploaded or typed scenes, and missing map tiles.

Every write goes through `textitsr.index.archive.Archive`; the service sees the new manifest by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import SearchService


def add_scenes(service: SearchService, paths: list[Path], progress: Any = None, **options: Any) -> int:
    """Tile and embed GeoTIFF scenes into `service`'s archive; the service sees them at its next call.

    Returns the number of pairs added; scenes already in the archive are refused (InputError).
    """
    from textitsr.index.archive import Archive

    return Archive(service.store_root, service.checkpoint).add_scenes(paths, progress or False, **options)


def refuse_known_uploads(service: SearchService, files: list[tuple[str, bytes]]) -> None:
    """InputError when the uploaded scenes (name, bytes) are all in the archive already (by content)."""
    from textitsr.app.uploads import content_key
    from textitsr.index.archive import Archive

    Archive(service.store_root).refuse_known_scenes([content_key(data) for _, data in files],
                                                    [name for name, _ in files])


def write_tiles(service: SearchService, progress: Any = None) -> None:
    """Write the map tiles of scenes that have none yet (stores built before tiles existed)."""
    from textitsr.index.archive import Archive

    Archive(service.store_root).tile_missing(progress)
