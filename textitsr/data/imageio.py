"""Reading image files and scaling any pixel type to the [0, 1] display range, shared by all loaders.

One scaling rule everywhere: uint8 is already display-scaled (/255); 16-bit, other integer and float
data are divided by one *gain* (a high percentile over all bands), so band ratios, hence NDVI/NDWI,
survive the scaling. Before and after images of one pair (or one scene of a series) share a gain
rule, so the two dates stay comparable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from textitsr.config import MAX_SCENE_PIXELS
from textitsr.errors import InputError

#: File suffixes the non-georeferenced loaders accept as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: Band names assumed when a file does not name its bands, by band count.
DEFAULT_BAND_NAMES: dict[int, tuple[str, ...]] = {
    1: ("gray",),
    2: ("gray", "alpha"),
    3: ("red", "green", "blue"),
    4: ("red", "green", "blue", "nir"),
}

#: Percentile of valid pixels (all bands) that maps to 1.0 for non-uint8 data.
GAIN_PERCENTILE = 99.0

_BAND_ALIASES = {
    "r": "red",
    "red": "red",
    "g": "green",
    "green": "green",
    "b": "blue",
    "blue": "blue",
    "nir": "nir",
    "nearinfrared": "nir",
    "nearir": "nir",
    "infrared": "nir",
    "swir": "swir1",
    "swir1": "swir1",
    "shortwaveinfrared1": "swir1",
    "swir2": "swir2",
    "shortwaveinfrared2": "swir2",
    "gray": "gray",
    "grey": "gray",
    "pan": "gray",
    "panchromatic": "gray",
    "alpha": "alpha",
    "coastal": "coastal",
    "rededge": "rededge",
}


def normalise_band_name(name: str) -> str:
    """Canonical lower-case band name ("Near Infrared" -> "nir", "SWIR-1" -> "swir1")."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _BAND_ALIASES.get(key, key)


def default_band_names(count: int) -> tuple[str, ...]:
    return DEFAULT_BAND_NAMES.get(count, tuple(f"b{i + 1}" for i in range(count)))


def resolve_band_names(
    count: int,
    given: Sequence[str] | None,
    from_file: Sequence[str] | None,
    where: Path | str,
    defaults: Mapping[int, tuple[str, ...]] | None = None,
) -> tuple[str, ...]:
    """Band names for `count` channels: the user's, else the file's, else the defaults by count.

    `defaults` lets a dataset override the generic names for a band count it knows (Dubai-CCD:
    6 bands are Landsat-7 ETM+). Names that do not match the channel count are an input error.
    """
    bands = tuple(given or from_file or (defaults or {}).get(count) or default_band_names(count))
    if len(bands) != count:
        raise InputError(f"{where}: {count} bands but band names {list(bands)}; expected {len(bands)} bands")
    return bands


def default_display(bands: Sequence[str]) -> tuple[str, str, str]:
    """True colour when possible, else a false-colour composite, else the first band as grey."""
    for combo in (("red", "green", "blue"), ("swir1", "nir", "red"), ("nir", "red", "green")):
        if all(b in bands for b in combo):
            return combo
    return (bands[0], bands[0], bands[0])


def resolve_display(
    display: str | Sequence[str] | None, bands: Sequence[str], where: str
) -> tuple[str, str, str]:
    """Display bands from a preset ("rgb", "false-colour"/"false-color", "cir") or three names."""
    if display is None:
        return default_display(bands)
    presets = {
        "rgb": ("red", "green", "blue"),
        "false-colour": ("swir1", "nir", "red"),
        "false-color": ("swir1", "nir", "red"),
        "cir": ("nir", "red", "green"),
    }
    if isinstance(display, str):
        if display.lower() in presets:
            combo = presets[display.lower()]
        else:
            combo = tuple(normalise_band_name(p) for p in display.split(","))
    else:
        combo = tuple(normalise_band_name(p) for p in display)
    if len(combo) != 3:
        raise InputError(f"display bands {display!r}: expected a preset (rgb, false-colour, cir) or 3 names")
    missing = [b for b in combo if b not in bands]
    if missing:
        raise InputError(
            f"{where}: display bands {list(combo)} need {missing}, but the data has bands {list(bands)}"
        )
    return combo  # type: ignore[return-value]


def scale_gain(sample: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Divisor that maps data of this dtype to [0, 1] (255 for uint8; a high percentile otherwise)."""
    if sample.dtype == np.uint8:
        return 255.0
    if sample.dtype == np.bool_:
        return 1.0
    values = sample[valid] if valid is not None else sample.reshape(-1)
    values = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
    if values.size == 0:
        return 1.0
    if np.issubdtype(sample.dtype, np.floating) and values.min() >= 0.0 and values.max() <= 1.0:
        return 1.0  # already reflectance / display range
    gain = float(np.percentile(values, GAIN_PERCENTILE))
    return gain if gain > 0 else max(float(values.max()), 1.0)


def to_unit(data: np.ndarray, gain: float) -> np.ndarray:
    """float32 in [0, 1]: data / gain, clipped; NaN becomes 0."""
    out = data.astype(np.float32) / np.float32(gain)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


def check_scene_size(label: str, width: int, height: int, max_pixels: int | None = None) -> None:
    """Refuse a scene by its declared size before a pixel is read (a sparse file is tiny on disk)."""
    limit = MAX_SCENE_PIXELS if max_pixels is None else max_pixels
    if width * height > limit:
        raise InputError(
            f"{label}: declares {width} x {height} = {width * height:,} px, over the limit of {limit:,} px "
            "per scene (textitsr.config.MAX_SCENE_PIXELS); expected a smaller scene or a cropped copy"
        )


def read_raw(path: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Pixels of one image file in their native dtype (H x W x C) and band names if the file has them.

    TIFFs go through rasterio (any band count and dtype); other formats through Pillow.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            check_scene_size(str(path), *img.size)
            if img.mode in ("RGBA", "P", "CMYK", "LA", "YCbCr"):
                img = img.convert("RGB")
            arr = np.asarray(img)
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: refused, too many pixels for one image ({err})") from err
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: not a readable image ({err}); expected PNG/JPEG/TIFF") from err
    if arr.dtype == np.int32 and arr.max(initial=0) <= 65535:  # Pillow's 16-bit greyscale mode "I"
        arr = arr.astype(np.uint16)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, None


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain image tiles are expected here
            with rasterio.open(path) as src:
                check_scene_size(str(path), src.width, src.height)
                arr = src.read()
                desc = src.descriptions
    except RasterioIOError as err:
        raise InputError(f"{path}: not a readable TIFF ({err})") from err
    names = tuple(normalise_band_name(d) for d in desc) if all(desc) else None
    return np.moveaxis(arr, 0, -1), names


def read_pair_images(
    before: Path, after: Path, pair_id: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Both images of a pair scaled to [0, 1] with one shared gain; sizes must match."""
    a, names_a = read_raw(before)
    b, names_b = read_raw(after)
    if a.shape != b.shape:
        raise InputError(
            f"pair {pair_id!r}: {before} is {a.shape[1]}x{a.shape[0]}x{a.shape[2]} but {after} is "
            f"{b.shape[1]}x{b.shape[0]}x{b.shape[2]}; expected both images of a pair to have the same size"
        )
    if a.dtype != b.dtype:
        raise InputError(
            f"pair {pair_id!r}: {before} is {a.dtype} but {after} is {b.dtype}; expected one dtype"
        )
    gain = scale_gain(np.stack([a, b]))
    return to_unit(a, gain), to_unit(b, gain), names_a or names_b
