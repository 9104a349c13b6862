"""The base archive's map layers (imagery tiles, footprints), published under static/ once per state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textitsr.app.config import AppConfig, load_config
from textitsr.app.maps import MapLayers
from textitsr.app.services import _cache_resource, get_base_service

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import SearchService


@_cache_resource(show_spinner="Publishing the map tiles (once per server process)...", max_entries=4)
def _publish_map(store: str, n_pairs: int, tiles_stamp: float, _service: SearchService) -> MapLayers:
    """`n_pairs` and `tiles_stamp` only key the cache (scenes added -> published again)."""
    from textitsr.app.footprints import feature_bounds
    from textitsr.app.maps import labelled_footprints
    from textitsr.app.static_files import publish_json, publish_tree
    from textitsr.index.store import TILES

    tiles_url = publish_tree(Path(store) / TILES, Path(store))
    footprints = _service.footprints()
    footprints_url = publish_json(labelled_footprints(footprints), Path(store), "footprints")
    return MapLayers(_service.scene_areas(), tiles_url, footprints_url, footprints,
                     feature_bounds(footprints))


def clear_map_cache() -> None:
    """Publish the map layers afresh on the next call (tiles were written)."""
    _publish_map.clear()


def map_layers(config: AppConfig | None = None) -> MapLayers:
    """The base archive's map layers, published under static/ (once per archive state)."""
    from textitsr.index.store import TILES
    from textitsr.index.tiles import INDEX

    config = config or load_config()
    base = get_base_service(config)
    index = config.store / TILES / INDEX
    stamp = index.stat().st_mtime if index.is_file() else 0.0
    return _publish_map(str(config.store), len(base), stamp, base)
