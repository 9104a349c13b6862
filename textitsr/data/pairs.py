"""The one record every loader yields, and the protocol every loader implements."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from textitsr.errors import InputError

#: (west, south, east, north)
Bounds = tuple[float, float, float, float]

SPLITS = ("train", "val", "test")

def check_split(split: str | None) -> str | None:
    """`split` when it is None (all pairs) or one of SPLITS; anything else is an InputError."""
    if split is not None and split not in SPLITS:
        raise InputError(f"split {split!r}: expected one of {', '.join(SPLITS)} (or none for all pairs)")
    return split


_ID_UNSAFE = re.compile(r"[^\w.+-]+")


def id_part(text: str) -> str:
    """A piece of a pair id taken from a file name: runs of anything but letters, digits, '.', '+',
    '-' and '_' become one '_', so ids carry no markup, quotes, slashes or spaces into URLs and pages.
    """
    return _ID_UNSAFE.sub("_", str(text)).strip("_") or "_"


@dataclass
class BitemporalPair:
    """Two co-registered images of one place at two dates, with what is known about them.

    Pixels are float32 H x W x C scaled to the display range [0, 1] (8/16-bit and float sources are
    scaled by their loader), so every encoder and viewer sees the same convention. `bands` names the
    channels ("red", "green", "blue", "nir", "swir1", ...); `display_bands` picks the three shown
    as RGB (true colour, or false colour such as swir1/nir/red for Landsat).
    """

    pair_id: str
    before: np.ndarray
    after: np.ndarray
    bands: tuple[str, ...] = ("red", "green", "blue")
    display_bands: tuple[str, str, str] = ("red", "green", "blue")
    captions: list[str] = field(default_factory=list)
    source: str = ""
    split: str | None = None
    #: Geographic footprint in lon/lat (EPSG:4326), when the source is georeferenced.
    bounds: Bounds | None = None
    #: Native CRS (e.g. "EPSG:26914") and footprint in that CRS.
    crs: str | None = None
    native_bounds: Bounds | None = None
    #: ISO dates (YYYY-MM-DD) of the before and after acquisitions, when known.
    dates: tuple[str | None, str | None] = (None, None)
    #: Whether anything changed (LEVIR-CC changeflag; synthetic ground truth), when known.
    changed: bool | None = None
    #: Ground-truth change type (synthetic world: e.g. "buildings_built", "none"), when known.
    change_type: str | None = None
    #: JSON-serialisable recipe to re-read the pixels (paths, raster window), for the index.
    location: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("before", "after"):
            img = getattr(self, name)
            if not isinstance(img, np.ndarray) or img.ndim != 3:
                raise InputError(
                    f"pair {self.pair_id!r}: {name} image must be an H x W x C array, "
                    f"got {getattr(img, 'shape', type(img).__name__)}"
                )
        if self.before.shape != self.after.shape:
            raise InputError(
                f"pair {self.pair_id!r}: before and after images differ in size "
                f"({self.before.shape} vs {self.after.shape}); expected the same H x W x C"
            )
        if self.before.shape[2] != len(self.bands):
            raise InputError(
                f"pair {self.pair_id!r}: {self.before.shape[2]} channels but {len(self.bands)} "
                f"band names {self.bands}"
            )
        missing = [b for b in self.display_bands if b not in self.bands]
        if missing:
            raise InputError(f"pair {self.pair_id!r}: display bands {missing} not in {self.bands}")

    def band(self, when: str, name: str) -> np.ndarray:
        """One band (H x W float32) of the 'before' or 'after' image."""
        return getattr(self, when)[..., self.bands.index(name)]

    def rgb(self, when: str) -> np.ndarray:
        """The display composite of 'before' or 'after' as uint8 H x W x 3 (what encoders see)."""
        img = getattr(self, when)
        idx = [self.bands.index(b) for b in self.display_bands]
        return (np.clip(img[..., idx], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@runtime_checkable
class PairSource(Protocol):
    """What every loader implements: a named, sized, re-iterable collection of pairs."""

    name: str

    def __len__(self) -> int: ...

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        """Yield pairs (all, or only those of one split), in a stable order."""
        ...
