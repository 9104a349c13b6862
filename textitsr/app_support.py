"""What the Streamlit pages share: configuration, the cached service, input checks, map and figures.

The pages stay thin (widgets and layout); everything here that does not need a running Streamlit
session is a plain function so it can be unit-tested. The app reaches the model and the archive
only through `textitsr.service.SearchService`, opened once per process (`st.cache_resource`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textitsr.config import DATA_DIR, DemoPaths
from textitsr.data.geotiff import GeoTiffOptions
from textitsr.errors import InputError, StoreError, TextITSRError
from textitsr.escape import html_text, markdown_code, markdown_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    import folium
    import plotly.graph_objects as go

    from textitsr.active.rounds import AnnealSession
    from textitsr.service import ArchiveStats, CaptionHit, PairHit, SearchFilters, SearchService

log = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]

# ------------------------------------------------------------------------------------ config
APP_TITLE = "textitsr · change retrieval"
APP_ICON = ":material/satellite_alt:"
ENV_STORE = "TEXTITSR_STORE"
ENV_CHECKPOINT = "TEXTITSR_CHECKPOINT"
ENV_DATA_ROOTS = "TEXTITSR_DATA_ROOTS"
ENV_MAX_UPLOAD_MB = "TEXTITSR_MAX_UPLOAD_MB"
ENV_BASEMAP = "TEXTITSR_BASEMAP"
ENV_ANNOTATIONS = "TEXTITSR_ANNOTATIONS"

#: Tile size offered for new scenes when the archive's own is unknown (the GeoTIFF loader's default).
DEFAULT_TILE_SIZE: int = GeoTiffOptions.tile_size

#: Example queries offered as one-click buttons on the text search page.
EXAMPLE_QUERIES: tuple[str, ...] = (
    "many new buildings were built",
    "a new road was constructed",
    "the vegetation was cleared",
    "a new lake appeared",
    "nothing has changed",
)


@dataclass(frozen=True)
class AppConfig:
    """Where the app finds its archive, and what users may point it at.

    `data_roots` bounds every path typed in the app (scene paths) and receives uploads;
    `max_upload_mb` is checked by the app before anything is written (Streamlit's own
    `server.maxUploadSize` in .streamlit/config.toml is only the transport ceiling).
    """

    store: Path = DemoPaths().store
    #: None -> the checkpoint recorded in the store's manifest.
    checkpoint: Path | None = None
    data_roots: tuple[Path, ...] = (DATA_DIR,)
    max_upload_mb: int = 200
    #: "osm" shows OpenStreetMap tiles under the archive when reachable; "none" for no basemap.
    basemap: str = "osm"
    #: ANNEAL workspace (annotation log, fine-tuned checkpoints and store); None -> next to the store.
    annotations: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_upload_mb, int) or self.max_upload_mb < 1:
            raise InputError(
                f"{ENV_MAX_UPLOAD_MB}={self.max_upload_mb!r}: expected a whole number of megabytes >= 1"
            )

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def upload_dir(self) -> Path:
        return self.data_roots[0] / "uploads"

    @property
    def annotations_dir(self) -> Path:
        """The ANNEAL workspace: `annotations/` beside a store named `store`, else `<store>-annotations/`."""
        if self.annotations is not None:
            return self.annotations
        name = "annotations" if self.store.name == "store" else f"{self.store.name}-annotations"
        return self.store.parent / name


def load_config(env: Mapping[str, str] | None = None) -> AppConfig:
    """AppConfig from TEXTITSR_* environment variables; unset ones keep the dataclass defaults."""
    env = os.environ if env is None else env
    base = AppConfig()
    kwargs: dict[str, Any] = {}
    if env.get(ENV_STORE):
        kwargs["store"] = Path(env[ENV_STORE]).expanduser()
    if env.get(ENV_CHECKPOINT):
        kwargs["checkpoint"] = Path(env[ENV_CHECKPOINT]).expanduser()
    if env.get(ENV_DATA_ROOTS):
        roots = tuple(Path(p).expanduser() for p in env[ENV_DATA_ROOTS].split(os.pathsep) if p.strip())
        if roots:
            kwargs["data_roots"] = roots
    if env.get(ENV_MAX_UPLOAD_MB):
        try:
            kwargs["max_upload_mb"] = int(env[ENV_MAX_UPLOAD_MB])
        except ValueError as err:
            raise InputError(
                f"{ENV_MAX_UPLOAD_MB}={env[ENV_MAX_UPLOAD_MB]!r}: expected a whole number of megabytes"
            ) from err
    if env.get(ENV_BASEMAP):
        basemap = env[ENV_BASEMAP].strip().lower()
        if basemap not in ("osm", "none"):
            raise InputError(f"{ENV_BASEMAP}={basemap!r}: expected 'osm' or 'none'")
        kwargs["basemap"] = basemap
    if env.get(ENV_ANNOTATIONS):
        kwargs["annotations"] = Path(env[ENV_ANNOTATIONS]).expanduser()
    return AppConfig(**{**base.__dict__, **kwargs})


# -------------------------------------------------------------------------- active archive
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
    path = config.annotations_dir / "store"
    from textitsr.index.store import is_store

    return path if is_store(path) else None


def archive_choice(config: AppConfig) -> str:
    """The persisted choice (BASE or FINE_TUNED); BASE when unset or unreadable."""
    import json

    try:
        choice = json.loads((config.annotations_dir / ARCHIVE_CHOICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return BASE
    return FINE_TUNED if isinstance(choice, dict) and choice.get("archive") == FINE_TUNED else BASE


def set_archive_choice(config: AppConfig, kind: str) -> None:
    """Persist which archive the search pages use (shared by every session of this workspace)."""
    import json

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


# ------------------------------------------------------------------------- service (cached)
def _cache_resource(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import streamlit as st

    return st.cache_resource(**kwargs)


@_cache_resource(show_spinner="Loading the model and the archive (once per server process)...",
                 max_entries=4)
def _open_service(store: str, checkpoint: str | None, stamp: str = "") -> SearchService:
    """`stamp` only keys the cache (a re-embedded store at the same path is opened afresh)."""
    from textitsr.service import SearchService

    return SearchService.open(Path(store), Path(checkpoint) if checkpoint else None)


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

    Returns the number of pairs added (0: these scenes are already in the archive).
    """
    from textitsr.index.build import add_scenes as append_scenes

    added = append_scenes(service.checkpoint, service.store.root, paths, progress or False, **options)
    service.refresh()
    return added


def page_setup(title: str | None = None) -> None:
    """Page config every page sets itself: a page opened directly by URL before the home page
    has run (Streamlit then runs pages/ scripts without app.py) looks the same."""
    import streamlit as st

    st.set_page_config(page_title=f"{title} · textitsr" if title else APP_TITLE, page_icon=APP_ICON,
                       layout="wide")


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


def archive_metrics(stats: ArchiveStats) -> None:
    """The archive's headline numbers in one row (home page and Archive page show the same)."""
    import streamlit as st

    cols = st.columns(5)
    cols[0].metric("Image pairs", f"{stats.n_pairs:,}")
    cols[1].metric("Captions", f"{stats.n_captions:,}")
    cols[2].metric("Sources", len(stats.sources))
    cols[3].metric("First date", stats.date_range[0] or "?")
    cols[4].metric("Last date", stats.date_range[1] or "?")


@contextlib.contextmanager
def show_errors(what: str) -> Iterator[None]:
    """Run a block; a library error becomes one st.error line, anything else a short message."""
    import streamlit as st

    try:
        yield
    except TextITSRError as err:
        st.error(markdown_text(f"{what}: {err}"))
    except Exception as err:  # noqa: BLE001 - never show a traceback to the analyst
        log.exception("%s failed", what)
        st.error(markdown_text(f"{what} failed unexpectedly ({type(err).__name__}: {err})."))


# ------------------------------------------------------------------------------ input checks
def resolve_data_path(text: str, roots: Sequence[Path]) -> Path:
    """A user-typed path, resolved (symlinks and '..' followed) and required to lie in a data root.

    Relative paths are taken relative to the first root. Nothing is opened here.
    """
    text = (text or "").strip()
    if not text:
        raise InputError("scene path: empty; expected a GeoTIFF path inside the data roots")
    if "\x00" in text:
        raise InputError("scene path: contains a NUL character")
    if len(text) > MAX_PATH_CHARS or any(len(part) > 255 for part in Path(text).parts):
        raise InputError(
            f"scene path {text[:40]!r}...: {len(text)} characters; expected a path of at most "
            f"{MAX_PATH_CHARS} characters with names of at most 255"
        )
    if not roots:
        raise InputError("no data roots are configured; set TEXTITSR_DATA_ROOTS")
    raw = Path(text).expanduser()
    candidate = raw if raw.is_absolute() else roots[0] / raw
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InputError(f"scene path {text!r}: cannot be resolved ({err}); a symlink loop?") from err
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise InputError(f"scene path {text!r}: outside the configured data roots ({allowed})")


GEOTIFF_SUFFIXES = (".tif", ".tiff")
#: Longest typed scene path accepted (Linux PATH_MAX is 4096).
MAX_PATH_CHARS = 4096
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def check_scene_path(text: str, roots: Sequence[Path]) -> Path:
    """A typed scene path that is inside the data roots, exists, and names a GeoTIFF file."""
    path = resolve_data_path(text, roots)
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise InputError(f"scene path {text!r}: expected a .tif/.tiff GeoTIFF file")
    try:
        if not path.is_file():
            raise InputError(f"scene path {text!r}: no such file")
        with path.open("rb") as fh:
            if fh.read(4) not in _TIFF_MAGICS:
                raise InputError(f"scene path {text!r}: not a TIFF file (bad header)")
    except OSError as err:  # a symlink loop, a name too long, no permission
        raise InputError(f"scene path {text!r}: cannot be read ({err.strerror or err})") from err
    return path


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_upload_name(name: str) -> str:
    """A file name reduced to [A-Za-z0-9._-] with no directory part (never trusted as given)."""
    stem = _SAFE_NAME.sub("_", Path(name or "").name).strip("._")
    return stem or "scene.tif"


def validate_upload(name: str, data: bytes, max_bytes: int) -> dict[str, Any]:
    """Check an uploaded GeoTIFF entirely in memory; returns its basic facts. Nothing is written.

    Checks: extension, size limit, TIFF header, that GDAL can read it (every pixel block, so a
    truncated file is caught here and not halfway through tiling), and that it carries a CRS and a
    geotransform (a scene the archive can tile needs both).
    """
    label = f"upload {name!r}"
    if Path(name).suffix.lower() not in GEOTIFF_SUFFIXES:
        raise InputError(f"{label}: expected a .tif/.tiff GeoTIFF file")
    if len(data) == 0:
        raise InputError(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise InputError(
            f"{label}: {len(data) / 2**20:.1f} MB is over the {max_bytes / 2**20:.0f} MB upload limit"
        )
    if data[:4] not in _TIFF_MAGICS:
        raise InputError(f"{label}: not a TIFF file (bad header)")
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.io import MemoryFile

    try:
        with MemoryFile(data) as mem, mem.open() as ds:
            facts = {
                "width": ds.width,
                "height": ds.height,
                "count": ds.count,
                "dtype": ds.dtypes[0],
                "crs": ds.crs.to_string() if ds.crs else None,
                "bounds": tuple(ds.bounds),
                "identity_transform": ds.transform == rasterio.Affine.identity(),
            }
            for _, window in ds.block_windows(1):  # one block at a time: memory stays small
                ds.read(window=window)
    except RasterioError as err:
        raise InputError(f"{label}: GDAL cannot read it as a GeoTIFF ({err})") from err
    if not facts["crs"] or facts["identity_transform"]:
        raise InputError(f"{label}: not georeferenced (no CRS/geotransform); expected a GeoTIFF scene")
    return facts


def upload_stamp() -> str:
    """Folder name for one batch of uploads (time-ordered, unique enough for one user action)."""
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def store_upload(name: str, data: bytes, upload_dir: Path, stamp: str | None = None) -> Path:
    """Write an already-validated upload under `upload_dir/<stamp>/` (atomically); returns its path."""
    from textitsr.atomic import atomic_write_bytes

    stamp = stamp or upload_stamp()
    dest = upload_dir / stamp / safe_upload_name(name)
    atomic_write_bytes(dest, data)
    return dest


def parse_bbox(values: Sequence[float]) -> Bounds:
    """(west, south, east, north) in degrees, checked for order and range."""
    if len(values) != 4:
        raise InputError(f"area: expected 4 numbers west, south, east, north; got {len(values)}")
    w, s, e, n = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InputError("area: the numbers must be finite")
    if not (-180 <= w < e <= 180):
        raise InputError(f"area: expected -180 <= west < east <= 180, got west={w}, east={e}")
    if not (-90 <= s < n <= 90):
        raise InputError(f"area: expected -90 <= south < north <= 90, got south={s}, north={n}")
    return (w, s, e, n)


def make_filters(
    bbox: Sequence[float] | None = None,
    date_range: Sequence[date | str | None] | None = None,
    sources: Sequence[str] | None = None,
) -> SearchFilters | None:
    """SearchFilters from the page's widgets (None when no filter is set)."""
    from textitsr.service import SearchFilters

    box = parse_bbox(bbox) if bbox is not None else None
    date_from = date_to = None
    if date_range:
        parts = [d.isoformat() if isinstance(d, date) else d for d in date_range]
        date_from = parts[0] if len(parts) > 0 else None
        date_to = parts[1] if len(parts) > 1 else None
        if date_from and date_to and date_from > date_to:
            raise InputError(f"date range: from {date_from} is after to {date_to}")
    srcs = tuple(sources) if sources else None
    if box is None and date_from is None and date_to is None and srcs is None:
        return None
    return SearchFilters(bbox=box, date_from=date_from, date_to=date_to, sources=srcs)


def parse_iso_date(text: str | None) -> date | None:
    """The date part of an ISO string, or None when absent/unparseable (archive metadata)."""
    if not text:
        return None
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError:
        return None


# ------------------------------------------------------------------------ map click / draw
@dataclass(frozen=True)
class MapPick:
    """The query pair chosen on the map, and how (a click on a tile, or a drawn rectangle)."""

    pair_id: str
    how: str  # "click" | "rectangle"
    point: tuple[float, float] | None = None  # (lon, lat) of the click
    bbox: Bounds | None = None  # drawn rectangle


def _rings(geometry: Mapping[str, Any]) -> list[list[tuple[float, float]]]:
    """Outer rings (lon, lat) of a Polygon / MultiPolygon geometry."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates") or []
    if kind == "Polygon":
        return [[(float(x), float(y)) for x, y, *_ in coords[0]]] if coords else []
    if kind == "MultiPolygon":
        return [[(float(x), float(y)) for x, y, *_ in poly[0]] for poly in coords if poly]
    return []


def _point_in_ring(x: float, y: float, ring: Sequence[tuple[float, float]]) -> bool:
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def _ring_bbox(ring: Sequence[tuple[float, float]]) -> Bounds:
    xs, ys = zip(*ring, strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def _overlap(a: Bounds, b: Bounds) -> float:
    w, s = max(a[0], b[0]), max(a[1], b[1])
    e, n = min(a[2], b[2]), min(a[3], b[3])
    return max(0.0, e - w) * max(0.0, n - s)


def _area(b: Bounds) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def pair_at_point(lon: float, lat: float, footprints: Mapping[str, Any]) -> str | None:
    """The pair whose footprint contains (lon, lat); the smallest one when footprints overlap."""
    best: tuple[float, str] | None = None
    for feat in footprints.get("features", []):
        pid = (feat.get("properties") or {}).get("pair_id")
        for ring in _rings(feat.get("geometry") or {}):
            if pid is not None and _point_in_ring(lon, lat, ring):
                area = _area(_ring_bbox(ring))
                if best is None or area < best[0]:
                    best = (area, str(pid))
    return best[1] if best else None


def pair_in_box(box: Bounds, footprints: Mapping[str, Any]) -> str | None:
    """The pair whose footprint overlaps `box` most (ties: nearest centre); None when none overlaps."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    best: tuple[float, float, str] | None = None
    for feat in footprints.get("features", []):
        pid = (feat.get("properties") or {}).get("pair_id")
        for ring in _rings(feat.get("geometry") or {}):
            fb = _ring_bbox(ring)
            ov = _overlap(box, fb)
            if pid is None or ov <= 0:
                continue
            dist = math.hypot((fb[0] + fb[2]) / 2 - cx, (fb[1] + fb[3]) / 2 - cy)
            key = (-ov, dist, str(pid))
            if best is None or key < best:
                best = key
    return best[2] if best else None


def _click_point(event: Mapping[str, Any]) -> tuple[float, float] | None:
    for key in ("last_object_clicked", "last_clicked"):
        val = event.get(key)
        if isinstance(val, Mapping) and val.get("lat") is not None and val.get("lng") is not None:
            return (float(val["lng"]), float(val["lat"]))
    return None


def drawn_box(event: Mapping[str, Any]) -> Bounds | None:
    drawing = event.get("last_active_drawing")
    if not isinstance(drawing, Mapping):
        return None
    rings = _rings(drawing.get("geometry") or {})
    return _ring_bbox(rings[0]) if rings and rings[0] else None


def pick_query_pair(
    event: Mapping[str, Any] | None,
    footprints: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
) -> MapPick | None:
    """Which pair the analyst picked with the latest map interaction (st_folium's return value).

    `previous` is the event already handled: the action that changed since then wins (a new
    rectangle, or a new click); without it a drawn rectangle wins over a click. Returns None when
    nothing new happened or the click/rectangle touches no footprint.
    """
    action = new_map_action(event, previous)
    drawing = (event or {}).get("last_active_drawing")
    props = (drawing.get("properties") or {}) if isinstance(drawing, Mapping) else {}
    clicked_id = props.get("pair_id")
    if action == "rectangle" and clicked_id is not None:
        # st_folium reports a click on a footprint as its "active drawing": the feature itself.
        known = {str(f.get("properties", {}).get("pair_id")) for f in footprints.get("features", [])}
        if str(clicked_id) not in known:
            return None
        return MapPick(str(clicked_id), "click", point=_click_point(event or {}))
    if action == "rectangle":
        box = drawn_box(event or {})
        pid = pair_in_box(box, footprints) if box else None
        return MapPick(pid, "rectangle", bbox=box) if pid else None
    if action == "click":
        point = _click_point(event or {})
        pid = pair_at_point(point[0], point[1], footprints) if point else None
        return MapPick(pid, "click", point=point) if pid else None
    return None


def new_map_action(event: Mapping[str, Any] | None, previous: Mapping[str, Any] | None = None) -> str | None:
    """"rectangle" or "click" when the map event holds an action not in `previous`, else None."""
    if not event:
        return None
    previous = previous or {}
    box, point = drawn_box(event), _click_point(event)
    if box is not None and box != drawn_box(previous):
        return "rectangle"
    if point is not None and point != _click_point(previous):
        return "click"
    return None


def footprints_bounds(footprints: Mapping[str, Any]) -> Bounds | None:
    """Bounding box (W, S, E, N) of all footprints, or None for an empty collection."""
    boxes = [_ring_bbox(r) for f in footprints.get("features", []) for r in _rings(f.get("geometry") or {})]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def feature_bounds(footprints: Mapping[str, Any]) -> dict[str, Bounds]:
    """pair_id -> bounding box of its footprint."""
    out: dict[str, Bounds] = {}
    for feat in footprints.get("features", []):
        pid = (feat.get("properties") or {}).get("pair_id")
        rings = _rings(feat.get("geometry") or {})
        if pid is not None and rings:
            out[str(pid)] = _ring_bbox(rings[0])
    return out


@dataclass(frozen=True)
class Cluster:
    """A group of neighbouring footprints (one scene, one town): where the map should look."""

    bounds: Bounds
    n_pairs: int

    @property
    def center(self) -> tuple[float, float]:
        """(lat, lon) of the centre."""
        return ((self.bounds[1] + self.bounds[3]) / 2, (self.bounds[0] + self.bounds[2]) / 2)


def footprint_clusters(footprints: Mapping[str, Any], gap_tiles: float = 4.0) -> list[Cluster]:
    """Footprints grouped by proximity (a grid of `gap_tiles` median tile sizes), largest first.

    Archives are usually a few dense scenes far apart; fitting the map to all of them shows specks.
    """
    boxes = list(feature_bounds(footprints).values())
    if not boxes:
        return []
    size = float(np.median([max(b[2] - b[0], b[3] - b[1]) for b in boxes])) or 1e-6
    cell = size * gap_tiles
    keys = [(math.floor((b[0] + b[2]) / 2 / cell), math.floor((b[1] + b[3]) / 2 / cell)) for b in boxes]
    parent: dict[tuple[int, int], tuple[int, int]] = {k: k for k in keys}

    def find(k: tuple[int, int]) -> tuple[int, int]:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for kx, ky in list(parent):
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                other = (kx + dx, ky + dy)
                if other in parent:
                    parent[find(other)] = find((kx, ky))
    groups: dict[tuple[int, int], list[Bounds]] = {}
    for key, box in zip(keys, boxes, strict=True):
        groups.setdefault(find(key), []).append(box)
    clusters = [
        Cluster((min(b[0] for b in g), min(b[1] for b in g), max(b[2] for b in g), max(b[3] for b in g)),
                len(g))
        for g in groups.values()
    ]
    return sorted(clusters, key=lambda c: (-c.n_pairs, c.bounds))


# ------------------------------------------------------------------------------ map builder
#: Most scene overlays drawn on one map (each is an inline PNG; beyond this only outlines).
MAX_OVERLAYS = 400

FOOTPRINT_STYLE = {"color": "#2b6cb0", "weight": 1.5, "fillOpacity": 0.0}
QUERY_STYLE = {"color": "#e53e3e", "weight": 4, "fillOpacity": 0.0}
HIT_STYLE = {"color": "#f6ad55", "weight": 3, "fillOpacity": 0.0}


def png_data_url(image: np.ndarray, max_side: int = 256) -> str:
    """An RGB uint8 array as an inline PNG data URL (downscaled to max_side)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def archive_map(
    footprints: Mapping[str, Any],
    overlays: Mapping[str, str] | None = None,
    *,
    query_id: str | None = None,
    hits: Sequence[str] = (),
    basemap: str = "osm",
    draw: bool = True,
    height: int = 560,
    view: Bounds | None = None,
    clusters: Sequence[Cluster] = (),
) -> folium.Map:
    """Leaflet map (leafmap's folium backend) of the archive: scene overlays, footprints, picks.

    `overlays` maps pair_id -> image URL (data URL) drawn in its footprint; `query_id` is outlined
    red and `hits` orange (numbered tooltips). With `draw` a rectangle tool is added. The map
    opens on `view` (default: everything); `clusters` get a labelled dot each, so areas stay
    visible when zoomed out.
    """
    import folium
    import leafmap.foliumap as leafmap
    from folium import plugins

    from textitsr.map_assets import use_local_map_assets

    use_local_map_assets()
    bounds = footprints_bounds(footprints) or (-1.0, -1.0, 1.0, 1.0)
    center = [(bounds[1] + bounds[3]) / 2, (bounds[0] + bounds[2]) / 2]
    m = leafmap.Map(
        location=center,
        zoom_start=12,
        tiles="OpenStreetMap" if basemap == "osm" else None,
        draw_control=False,
        fullscreen_control=False,
        layers_control=False,
        height=height,
    )
    boxes = feature_bounds(footprints)
    if overlays:
        scenes = folium.FeatureGroup(name="scenes", show=True)
        for pid, url in list(overlays.items())[:MAX_OVERLAYS]:
            if pid in boxes:
                w, s, e, n = boxes[pid]
                folium.raster_layers.ImageOverlay(
                    url, bounds=[[s, w], [n, e]], opacity=1.0, interactive=False, zindex=1
                ).add_to(scenes)
        scenes.add_to(m)
    rank = {pid: i + 1 for i, pid in enumerate(hits)}

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        pid = feature["properties"].get("pair_id")
        if pid == query_id:
            return QUERY_STYLE
        return HIT_STYLE if pid in rank else FOOTPRINT_STYLE

    feats = []
    for feat in footprints.get("features", []):
        props = dict(feat.get("properties") or {})
        pid = props.get("pair_id")
        dates = props.get("dates") or (props.get("date_before"), props.get("date_after"))
        # Leaflet puts tooltip values into the page as HTML: only escaped copies go there, while
        # the raw pair_id stays in the properties for identifying clicks.
        props["tip_pair"] = html_text(pid)
        props["tip_dates"] = html_text(" → ".join(str(d) for d in dates if d) or "?")
        props["rank"] = "query" if pid == query_id else (f"#{rank[pid]}" if pid in rank else "")
        feats.append({**feat, "properties": props})
    folium.GeoJson(
        {"type": "FeatureCollection", "features": feats},
        name="footprints",
        style_function=style,
        highlight_function=lambda _f: {"weight": 4, "color": "#805ad5"},
        tooltip=folium.GeoJsonTooltip(
            fields=["tip_pair", "rank", "tip_dates"], aliases=["pair", "", "dates"]
        ),
    ).add_to(m)
    if draw:
        plugins.Draw(
            export=False,
            draw_options={
                "polyline": False, "polygon": False, "circle": False,
                "marker": False, "circlemarker": False, "rectangle": True,
            },
            edit_options={"edit": False, "remove": True},
        ).add_to(m)
    for i, cluster in enumerate(clusters, start=1):
        folium.CircleMarker(
            location=list(cluster.center), radius=7, color="#2b6cb0", fill=True, fill_opacity=0.25,
            weight=1, tooltip=f"Area {i}: {cluster.n_pairs} pairs", interactive=True,
        ).add_to(m)
    plugins.Fullscreen().add_to(m)
    w, s, e, n = view or bounds
    m.fit_bounds([[s, w], [n, e]])
    return m


# ---------------------------------------------------------------------------------- figures
def score_chart(hits: Sequence[PairHit], title: str = "Similarity of the results") -> go.Figure:
    """Horizontal bar chart of result scores, best on top."""
    import plotly.graph_objects as go

    labels = [html_text(f"#{h.rank} {h.pair_id}") for h in hits]
    fig = go.Figure(
        go.Bar(
            x=[h.score for h in hits],
            y=labels,
            orientation="h",
            marker_color="#2b6cb0",
            hovertemplate="%{y}<br>score %{x:.3f}<extra></extra>",
            text=[f"{h.score:.3f}" for h in hits],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="cosine similarity",
        yaxis={"autorange": "reversed"},
        height=max(220, 32 * len(hits) + 100),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def difference_map(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel change magnitude in [0, 1]: mean absolute RGB difference."""
    if before.shape != after.shape:
        raise InputError(f"difference: before {before.shape} and after {after.shape} differ in size")
    diff = np.abs(after.astype(np.float32) - before.astype(np.float32)).mean(axis=-1)
    return diff / 255.0


def difference_heatmap(before: np.ndarray, after: np.ndarray) -> go.Figure:
    """Plotly heatmap of |after - before| (mean over RGB)."""
    import plotly.express as px

    fig = px.imshow(
        difference_map(before, after), color_continuous_scale="Inferno", zmin=0, zmax=1,
        labels={"color": "|after - before|"},
    )
    fig.update_layout(title="Difference (mean |after - before|, RGB)",
                      margin={"l": 0, "r": 0, "t": 40, "b": 0})
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def swipe_frames(before: np.ndarray, after: np.ndarray, steps: int = 11) -> list[np.ndarray]:
    """Composites with 'after' on the left up to a moving split line, 'before' to its right."""
    if before.shape != after.shape:
        raise InputError(f"swipe: before {before.shape} and after {after.shape} differ in size")
    width = before.shape[1]
    frames = []
    for i in range(steps):
        cut = round(width * i / (steps - 1))
        comp = before.copy()
        comp[:, :cut] = after[:, :cut]
        if 0 < cut < width:
            comp[:, max(cut - 1, 0) : cut] = (255, 255, 255)
        frames.append(comp)
    return frames


def swipe_figure(before: np.ndarray, after: np.ndarray, steps: int = 11) -> go.Figure:
    """Plotly swipe view: a slider moves the split between after (left) and before (right)."""
    import plotly.graph_objects as go

    frames = swipe_frames(before, after, steps)
    urls = [png_data_url(f, max_side=512) for f in frames]
    start = steps // 2
    fig = go.Figure(go.Image(source=urls[start]))
    fig.frames = [go.Frame(data=[go.Image(source=u)], name=str(i)) for i, u in enumerate(urls)]
    fig.update_layout(
        title="Swipe: after | before",
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        sliders=[{
            "active": start,
            "currentvalue": {"prefix": "after shown up to ", "suffix": "%"},
            "steps": [
                {
                    "label": str(round(100 * i / (steps - 1))),
                    "method": "animate",
                    "args": [[str(i)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                        "transition": {"duration": 0}}],
                }
                for i in range(steps)
            ],
        }],
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def stats_frame_rows(stats: Mapping[str, float]) -> list[dict[str, Any]]:
    """Spectral change statistics as table rows (name, value)."""
    return [{"statistic": k.replace("_", " "), "value": round(float(v), 4)} for k, v in stats.items()]


# --------------------------------------------------------------------- page helpers (UI)
INSPECT_KEY = "inspect_pair"
INSPECTOR_PAGE = "pages/3_Inspector.py"


def open_inspector(pair_id: str) -> None:
    """Go to the inspector page showing `pair_id` (session state + query param survive reloads)."""
    import streamlit as st

    st.session_state[INSPECT_KEY] = pair_id
    st.query_params["pair"] = pair_id
    try:
        st.switch_page(INSPECTOR_PAGE)
    except st.errors.StreamlitAPIException:
        st.info(f"Open the Inspector page to see {markdown_code(pair_id)}.")


def hit_caption(hit: PairHit) -> str:
    """One line under a result: dates and (when known) the change type."""
    dates = " → ".join(d for d in hit.dates if d) or "dates unknown"
    kind = f" · {hit.change_type.replace('_', ' ')}" if hit.change_type else ""
    return f"{dates}{kind}"


def sentence_table(sentences: Sequence[CaptionHit]) -> None:
    """The sentences that best describe a pair, with their scores (Map query and Inspector)."""
    import streamlit as st

    if not sentences:
        st.caption("The archive holds no sentences.")
        return
    st.dataframe(
        [{"rank": c.rank, "score": round(c.score, 3), "sentence": c.text} for c in sentences],
        hide_index=True, width="stretch",
    )


def results_grid(service: SearchService, hits: Sequence[PairHit], key: str, columns: int = 2) -> None:
    """Before/after thumbnails of each hit with rank, score and an Inspect button."""
    import streamlit as st

    for start in range(0, len(hits), columns):
        cols = st.columns(columns, border=True)
        for col, hit in zip(cols, hits[start : start + columns], strict=False):
            with col:
                st.markdown(f"**#{hit.rank}** {markdown_code(hit.pair_id)} — score **{hit.score:.3f}**")
                try:
                    before, after = service.catalog.thumbnails(hit.pair_id)
                    left, right = st.columns(2)
                    left.image(before, caption="before", width="stretch")
                    right.image(after, caption="after", width="stretch")
                except TextITSRError as err:
                    st.warning(f"thumbnails unavailable: {markdown_text(err)}")
                st.caption(markdown_text(hit_caption(hit)))
                if hit.captions:
                    st.caption(markdown_text(f"“{hit.captions[0]}”"))
                if st.button("Inspect", key=f"{key}-inspect-{hit.pair_id}"):
                    open_inspector(hit.pair_id)


# ------------------------------------------------------------------------------ navigation
@dataclass(frozen=True)
class PageEntry:
    """One page script of the app, as st.navigation shows it."""

    path: Path
    title: str
    url_path: str
    icon: str | None = None


PAGE_ICONS = {
    "Text search": ":material/search:",
    "Map query": ":material/map:",
    "Inspector": ":material/compare:",
    "Archive": ":material/inventory_2:",
    "Annotate": ":material/label:",
}
_PAGE_NAME = re.compile(r"^(\d+)_(.+)$")


def discover_pages(pages_dir: Path) -> list[PageEntry]:
    """pages/<n>_<Title_words>.py scripts in number order, so new pages (e.g. Annotate) show up."""
    entries: list[tuple[int, str, PageEntry]] = []
    for path in pages_dir.glob("*.py"):
        if path.name.startswith("_"):
            continue
        match = _PAGE_NAME.match(path.stem)
        order, words = (int(match.group(1)), match.group(2)) if match else (10**6, path.stem)
        title = words.replace("_", " ").strip()
        title = title[:1].upper() + title[1:]
        # Same URL Streamlit gives a pages/ script ("Text_search"), so a first load of /Text_search
        # resolves before st.navigation has run (otherwise the browser shows "Page not found").
        url_path = re.sub(r"[_ ]+", "_", words).strip("_")
        entries.append((order, title, PageEntry(path, title, url_path, PAGE_ICONS.get(title))))
    return [e for _, _, e in sorted(entries, key=lambda t: (t[0], t[1]))]
