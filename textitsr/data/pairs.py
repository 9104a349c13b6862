"""The one record every loader yields, the protocol every loader implements, and its shared base."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    #: The sensor, series or dataset the pair was taken from, when its listing says (a pairs
    #: folder's pairs.jsonl): an index reads each pair's change against the pairs of its archive.
    archive: str | None = None

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
    """What every loader implements: a named, sized, re-iterable collection of pairs that says where
    it reads from. Nothing after `data/` needs to know which dataset a source is."""

    name: str

    def __len__(self) -> int: ...

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        """Yield pairs (all, or only those of one split), in a stable order."""
        ...

    def count(self, split: str | None = None) -> int:
        """How many pairs `pairs(split)` yields (an upper bound where a loader skips tiles)."""
        ...

    def paths(self) -> list[Path]:
        """The folders or files the pairs are read from (identity of the source)."""
        ...

    def fingerprint(self, split: str | None = None, exclude: Path | None = None) -> str:
        """Cheap hash of the source's content: changes when its files change."""
        ...


@dataclass(frozen=True)
class SceneDisplay:
    """How a source shows one of its georeferenced scene files, exactly as its pairs' pixels: which
    file bands are red, green, blue (1-based) and each one's (offset, divisor), so that a display
    value is (raw - offset) / divisor clipped to [0, 1]. Map tiles are drawn with it."""

    path: Path
    bands: tuple[int, int, int]
    scale: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]

    @property
    def signature(self) -> str:
        """What the tiles drawn with this display depend on (beyond the file's content)."""
        scale = ",".join(f"{o:.6g}/{d:.6g}" for o, d in self.scale)
        return f"bands={','.join(map(str, self.bands))};scale={scale}"


class PairSourceBase:
    """Count, identity and fingerprint for loaders that only define `name`, `paths`, `pairs`, `__len__`."""

    name: str = "source"

    def __len__(self) -> int:
        raise NotImplementedError

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        raise NotImplementedError

    def paths(self) -> list[Path]:
        return []

    def count(self, split: str | None = None) -> int:
        return len(self) if split is None else sum(1 for _ in self.pairs(split))

    def map_scenes(self) -> list[SceneDisplay]:
        """The georeferenced scene files the pairs are cut from, shown as the pairs are (none here)."""
        return []

    def fingerprint(self, split: str | None = None, exclude: Path | None = None) -> str:
        """Hash of the relative paths, sizes and mtimes of the files under `paths()` (no pixels read;
        files under `exclude`, e.g. a cache kept inside the dataset, are left out); a source without
        files hashes its pair ids instead."""
        h = hashlib.sha256()
        roots = [p for p in self.paths() if p.exists()]
        if not roots:
            for pair in self.pairs(split):
                h.update(pair.pair_id.encode() + b"\n")
            return h.hexdigest()
        excl = exclude.resolve() if exclude is not None else None
        for root in roots:
            root = root.resolve()
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            # a cache inside the dataset is left out; a dataset inside the cache (e.g. derived
            # pairs written there) is still hashed, or its changes would never be seen
            skip = excl if excl is not None and excl != root and excl not in root.parents else None
            for p in files:
                if skip is not None and skip in p.parents:
                    continue
                st = p.stat()
                name = p.relative_to(root) if p != root else p.name
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
