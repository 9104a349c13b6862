"""The app's settings: TEXTITSR_* environment variables over dataclass defaults (one home each)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textitsr.config import DATA_DIR, DemoPaths
from textitsr.data.geotiff import GeoTiffOptions
from textitsr.errors import InputError

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
