"""Which archive the pages search (the base one or the ANNEAL fine-tuned copy), opened once per process.

The choice is persisted in the ANNEAL workspace so every session of the app agrees on it; the
`SearchService` of each archive is cached with `st.cache_resource` and shared by all sessions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textitsr.app.config import ENV_CHECKPOINT, ENV_STORE, AppConfig, load_config
from textitsr.errors import InputError, StoreError, TextITSRError
from textitsr.escape import markdown_code, markdown_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.active.rounds import AnnealSession
    from textitsr.app.footprints import Bounds
    from textitsr.index.tiles import SceneArea
    from textitsr.service import SearchService

log = logging.getLogger(__name__)

BASE = "base"
FINE_TUNED = "fine-tuned"
#: In the ANNEAL workspace: which archive the search pages use ({"archive": "base" | "fine-tuned"}).
ARCHIVE_CHOICE_FILE = "search.json"


@dataclass(frozen=True)
class Archive:
    """The store (and model) the search pages query: the base archive, or the ANNEAL re-embedded one.

    `stamp` changes whenever the store is rewritten behind the app's back (every "update model"),
    so the cached service is reopened; `note` says why the fine-tuned one was chosen but not used.
    """

    kind: str
    store: Path
    checkpoint: Path | None = None
    stamp: str = ""
    note: str | None = None

    @property
    def label(self) -> str:
        return "fine-tuned model (ANNEAL)" if self.kind == FINE_TUNED else "base model"


def fine_tuned_store(config: AppConfig) -> Path | None:
    """The store the Annotate page's last "update model" re-embedded, or None when there is none."""
    from textitsr.index.store import is_store

    path = config.annotations_dir / "store"
    return path if is_store(path) else None


def archive_choice(config: AppConfig) -> str:
    """The persisted choice (BASE or FINE_TUNED); BASE when unset or unreadable."""
    try:
        choice = json.loads((config.annotations_dir / ARCHIVE_CHOICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return BASE
    return FINE_TUNED if isinstance(choice, dict) and choice.get("archive") == FINE_TUNED else BASE


def set_archive_choice(config: AppConfig, kind: str) -> None:
    """Persist which archive the search pages use (shared by every session of this workspace)."""
    from textitsr.atomic import atomic_write_text

    if kind not in (BASE, FINE_TUNED):
        raise InputError(f"archive choice {kind!r}: expected {BASE!r} or {FINE_TUNED!r}")
    atomic_write_text(config.annotations_dir / ARCHIVE_CHOICE_FILE, json.dumps({"archive": kind}))


def _manifest(store: Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is no readable store there."""
    from textitsr.index.store import read_manifest

    try:
        return read_manifest(store)
    except StoreError:
        return None


def base_archive(config: AppConfig) -> Archive:
    return Archive(BASE, config.store, config.checkpoint)


def active_archive(config: AppConfig | None = None) -> Archive:
    """The archive the search pages use now: the fine-tuned store when chosen and current, else base.

    A fine-tuned store that no longer holds the base archive's pairs (scenes were added since the
    update) is not used: searching it would silently miss the new pairs.
    """
    config = config or load_config()
    base = base_archive(config)
    if archive_choice(config) != FINE_TUNED:
        return base
    tuned = fine_tuned_store(config)
    manifest = _manifest(tuned) if tuned is not None else None
    if tuned is None or manifest is None:
        return replace(base, note="No fine-tuned model yet: update the model on the Annotate page.")
    base_manifest = _manifest(config.store) or {}
    n_base, n_tuned = base_manifest.get("n_pairs"), manifest.get("n_pairs")
    if n_base is not None and n_tuned != n_base:
        return replace(
            base,
            note=f"The fine-tuned archive holds {n_tuned} pairs, the base archive {n_base}; searching the "
            "base archive. Update the model again on the Annotate page.",
        )
    return Archive(FINE_TUNED, tuned, None, stamp=str(manifest.get("checkpoint_id", "")))


def _cache_resource(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import streamlit as st

    return st.cache_resource(**kwargs)


@_cache_resource(show_spinner="Loading the model and the archive (once per server process)...",
                 max_entries=4)
def _open_service(store: str, checkpoint: str | None, stamp: str = "") -> SearchService:
    """`stamp` only keys the cache (a re-embedded store at the same path is opened afresh).

    Text side only: the pages query with sentences and with pairs already in the archive (their
    stored embeddings), never with new images, so the image backbone need not be loaded; adding
    scenes and ANNEAL load the full model from the checkpoint themselves.
    """
    from textitsr.service import SearchService

    return SearchService.open(Path(store), Path(checkpoint) if checkpoint else None, text_only=True)


def get_service(config: AppConfig | None = None, *, archive: Archive | None = None) -> SearchService:
    """The process-wide SearchService of `archive` (default: the active one), shared by sessions."""
    config = config or load_config()
    archive = archive or active_archive(config)
    return _open_service(str(archive.store), str(archive.checkpoint) if archive.checkpoint else None,
                         archive.stamp)


def get_base_service(config: AppConfig | None = None) -> SearchService:
    """The base archive's service: where scenes are added and ANNEAL takes its items from."""
    config = config or load_config()
    return get_service(config, archive=base_archive(config))


def clear_service_cache() -> None:
    """Forget the loaded service (after the archive changed on disk, e.g. scenes were added)."""
    _open_service.clear()


def anneal_session(config: AppConfig, strategy: str, batch: int) -> AnnealSession:
    """The ANNEAL session over the base archive, kept in the app's annotations workspace."""
    from textitsr.active.anneal import SelectionConfig
    from textitsr.active.rounds import AnnealSession

    return AnnealSession(config.store, config.annotations_dir, config.checkpoint,
                         SelectionConfig(strategy=strategy, batch=batch))


def add_scenes(service: SearchService, paths: list[Path], progress: Any = None, **options: Any) -> int:
    """Tile and embed GeoTIFF scenes into `service`'s archive; the service sees them at once.

    Returns the number of pairs added; scenes already in the archive are refused (InputError).
    """
    from textitsr.index.build import add_scenes as append_scenes

    added = append_scenes(service.checkpoint, service.store.root, paths, progress or False, **options)
    service.refresh()
    return added


def refuse_known_uploads(service: SearchService, files: list[tuple[str, bytes]]) -> None:
    """InputError when the uploaded scenes (name, bytes) are all in the archive already (by content)."""
    from textitsr.app.uploads import content_key
    from textitsr.index.tiles import refuse_known_scenes

    refuse_known_scenes(service.store, [content_key(data) for _, data in files], [name for name, _ in files])


def write_tiles(service: SearchService, progress: Any = None) -> None:
    """Write the map tiles of scenes that have none yet (stores built before tiles existed)."""
    from textitsr.index.tiles import tile_store

    tile_store(service.store, progress)
    service.refresh()


def service_or_stop(*, base: bool = False) -> SearchService:
    """The active archive's service (the base one with `base`), or a clear error and the page stops.

    Also shows in the sidebar which archive and model the search pages use.
    """
    import streamlit as st

    try:
        config = load_config()
        archive = active_archive(config)
        st.sidebar.caption(f"Searching with the **{archive.label}**  \n{markdown_code(archive.store)}")
        if archive.note:
            st.sidebar.warning(markdown_text(archive.note))
        return get_service(config, archive=base_archive(config) if base else archive)
    except TextITSRError as err:
        st.error(markdown_text(f"Could not open the archive: {err}"))
        st.info(
            "Run `textitsr demo` (or `make run`) to build the demo archive, or point the app at "
            f"another store with {ENV_STORE}=/path/to/store (and {ENV_CHECKPOINT} if needed)."
        )
        st.stop()
    except Exception as err:  # noqa: BLE001 - the page must show a message, never a traceback
        log.exception("opening the search service failed")
        st.error(markdown_text(f"Could not open the archive ({type(err).__name__}: {err})."))
        st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


@dataclass(frozen=True)
class MapLayers:
    """What the maps draw for the base archive: its areas, and where the browser fetches imagery
    tiles and footprints (Streamlit static serving)."""

    areas: list[SceneArea]
    tiles_url: str
    footprints_url: str
    #: Every pair's footprint (GeoJSON FeatureCollection, as `Catalog.footprints()` returns it) and
    #: pair_id -> (W, S, E, N): built once per archive state, not on every rerun (shared: read only).
    footprints: dict[str, Any]
    boxes: dict[str, Bounds]

    @property
    def signature(self) -> tuple:
        """What maps drawn from these layers depend on (keys maps rendered once, `map_widget`)."""
        tiles = tuple((a.name, a.bounds, a.before.key if a.before else "", a.after.key if a.after else "")
                      for a in self.areas)
        return (self.tiles_url, self.footprints_url, tiles)


@_cache_resource(show_spinner="Publishing the map tiles (once per server process)...", max_entries=4)
def _publish_map(store: str, n_pairs: int, tiles_stamp: float, _service: SearchService) -> MapLayers:
    """`n_pairs` and `tiles_stamp` only key the cache (scenes added -> published again)."""
    from textitsr.app.footprints import feature_bounds
    from textitsr.app.maps import labelled_footprints
    from textitsr.app.static_files import publish_json, publish_tree
    from textitsr.index.store import TILES

    tiles_url = publish_tree(Path(store) / TILES, Path(store))
    footprints = _service.catalog.footprints()
    footprints_url = publish_json(labelled_footprints(footprints), Path(store), "footprints")
    return MapLayers(_service.catalog.scene_areas(), tiles_url, footprints_url, footprints,
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


def _cache_data(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import streamlit as st

    return st.cache_data(**kwargs)


@_cache_data(show_spinner=False, max_entries=4096)
def _thumbnail_jpegs(store: str, n_pairs: int, pair_id: str, _service: SearchService) -> tuple[bytes, bytes]:
    """`store` and `n_pairs` only key the cache (another archive, or scenes added)."""
    from textitsr.app.figures import jpeg_bytes

    before, after = _service.catalog.thumbnails(pair_id)
    return jpeg_bytes(before), jpeg_bytes(after)


def thumbnail_jpegs(service: SearchService, pair_id: str) -> tuple[bytes, bytes]:
    """A pair's (before, after) thumbnails as JPEG bytes, decoded and encoded once per process.

    Result grids show the same pairs again and again; the same bytes also get the same media URL,
    so the browser shows them from its cache. StoreError when the pair has no thumbnails.
    """
    return _thumbnail_jpegs(str(service.store.root), len(service), pair_id, service)
