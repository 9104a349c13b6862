"""Scenes users point the app at: typed paths confined to the data roots, uploads checked in memory.

Nothing is written until every check has passed; uploads are then written atomically under the
first data root.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from textitsr.errors import InputError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Longest typed scene path accepted (Linux PATH_MAX is 4096).
MAX_PATH_CHARS = 4096
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


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


def safe_upload_name(name: str) -> str:
    """A file name reduced to [A-Za-z0-9._-] with no directory part (never trusted as given)."""
    stem = _SAFE_NAME.sub("_", Path(name or "").name).strip("._")
    return stem or "scene.tif"


def validate_upload(name: str, data: bytes, max_bytes: int, max_pixels: int | None = None) -> dict[str, Any]:
    """Check an uploaded GeoTIFF entirely in memory; returns its basic facts. Nothing is written.

    Checks: extension, size limit, declared pixel count (`max_pixels`, default the scene limit of
    `textitsr.config`), TIFF header, that GDAL can read it (every pixel block, so a
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
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.io import MemoryFile

    from textitsr.data.imageio import check_scene_size

    try:
        with MemoryFile(data) as mem:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # refused below, upload named
                ds = mem.open()
            with ds:
                facts = {
                    "width": ds.width,
                    "height": ds.height,
                    "count": ds.count,
                    "dtype": ds.dtypes[0],
                    "crs": ds.crs.to_string() if ds.crs else None,
                    "bounds": tuple(ds.bounds),
                    "identity_transform": ds.transform == rasterio.Affine.identity(),
                }
                check_scene_size(label, ds.width, ds.height, max_pixels)
                for _, window in ds.block_windows(1):  # one block at a time: memory stays small
                    ds.read(window=window)
    except RasterioError as err:
        raise InputError(f"{label}: GDAL cannot read it as a GeoTIFF ({err})") from err
    if not facts["crs"] or facts["identity_transform"]:
        raise InputError(f"{label}: not georeferenced (no CRS/geotransform); expected a GeoTIFF scene")
    return facts


def place_name(names: Sequence[str]) -> str:
    """A readable place for uploaded scenes' pair ids: the file names' common part without dates
    (`naip_2018.tif`, `naip_2020.tif` -> `naip`), else the first file's name."""
    from textitsr.data.scenes import place_from_names

    safe = [safe_upload_name(n) for n in names]
    place = place_from_names([Path(n).name for n in safe])
    return place if place != "scene" else re.sub(r"[^A-Za-z0-9]+", "_", Path(safe[0]).stem)


def upload_names(names: Sequence[str]) -> list[str]:
    """File names to store uploads under: their own (made safe); names given twice are numbered
    (`1-scene.tif`, `2-scene.tif`) so no upload overwrites another."""
    safe = [safe_upload_name(n) for n in names]
    if len(set(safe)) == len(safe):
        return safe
    return [f"{i}-{name}" for i, name in enumerate(safe, start=1)]


def content_key(data: bytes) -> str:
    """The content key of an uploaded scene: its decoded imagery (as `textitsr.index.tiles.tile_key`
    of a scene), so the same scene saved with another compression or name is known."""
    from rasterio.io import MemoryFile

    from textitsr.index.tiles import dataset_digest, tile_key

    with MemoryFile(data) as mem, mem.open() as src:
        return tile_key(dataset_digest(src))


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


@contextlib.contextmanager
def stored_uploads(files: Sequence[tuple[str, bytes]], upload_dir: Path) -> Iterator[list[Path]]:
    """Write validated uploads (name, bytes) into a new folder under `upload_dir` for the block's
    work; when the block fails, the files and the folder this wrote are removed again, so a failed
    upload leaves nothing behind."""
    stamp = upload_stamp()
    folder = upload_dir / stamp
    if folder.exists():
        raise InputError(f"{folder}: an upload folder of this name exists already; try again")
    written: list[Path] = []
    try:
        for name, (_, data) in zip(upload_names([n for n, _ in files]), files, strict=True):
            written.append(store_upload(name, data, upload_dir, stamp))
        yield written
    except Exception:  # not Streamlit's stop/rerun signals: the work may have gone through
        for path in written:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: never anything this did not write
        raise
