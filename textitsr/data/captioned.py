"""Base class of captioned pair layouts: each dataset lists its files, the pairs loop is written once.

torchgeo's `LEVIRCDBase` / `_load_files` pattern: a dataset (LEVIR-CC, Dubai-CCD, a pairs folder)
only says which before/after files make a pair and what is known about them (`PairFiles`); reading
the images, naming the bands, checking for missing files and building `BitemporalPair`s happens
here, the same way for all of them. Pair ids are `<source name>_<file stem>` (stem sanitised by `id_part`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from textitsr.data.imageio import normalise_band_name, read_pair_images, resolve_band_names, resolve_display
from textitsr.data.pairs import SPLITS, BitemporalPair, PairSourceBase, id_part
from textitsr.errors import InputError

ON_MISSING = ("error", "skip")


@dataclass(frozen=True)
class PairFiles:
    """One pair as a dataset lists it: its two image files and what the listing says about them."""

    before: Path
    after: Path
    captions: tuple[str, ...] = ()
    split: str | None = None
    changed: bool | None = None
    #: The file that listed this pair (a caption JSON), named when one of its images is missing.
    listed_in: str = ""
    #: The sensor, series or dataset the listing says the pair comes from (`BitemporalPair.archive`).
    archive: str | None = None


class CaptionedPairSource(PairSourceBase):
    """Pairs of a dataset root whose subclass lists the files (`_load_files`).

    band_names / display: override the band names read from the files (or the defaults by band
    count) and the three bands shown as RGB. on_missing: "error" (default) raises an InputError
    naming the first missing image when it is read; "skip" leaves pairs with a missing image out
    (`len()` then counts only complete pairs).
    """

    name = "captioned"
    #: Acquisition dates when the whole dataset shares them (Dubai-CCD: 2000 and 2010).
    dates: tuple[str | None, str | None] = (None, None)
    #: Band names the dataset knows for a band count (Dubai-CCD: 6 bands are Landsat-7 ETM+).
    band_defaults: Mapping[int, tuple[str, ...]] = {}

    def __init__(
        self,
        root: Path,
        band_names: tuple[str, ...] | None = None,
        display: str | tuple[str, ...] | None = None,
        on_missing: str = "error",
    ) -> None:
        self.root = Path(root)
        if on_missing not in ON_MISSING:
            raise InputError(f"on_missing={on_missing!r}: expected 'error' or 'skip'")
        self.on_missing = on_missing
        self.band_names = tuple(normalise_band_name(b) for b in band_names) if band_names else None
        self.display = display
        files = self._load_files()
        if on_missing == "skip":
            files = [f for f in files if f.before.is_file() and f.after.is_file()]
        self.files = files

    def _load_files(self) -> list[PairFiles]:
        """Every pair of the dataset, in a stable order (subclasses read their listing here)."""
        raise NotImplementedError

    def paths(self) -> list[Path]:
        return [self.root]

    def __len__(self) -> int:
        return len(self.files)

    def count(self, split: str | None = None) -> int:
        return len(self.files) if split is None else sum(f.split == split for f in self.files)

    def split_counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in SPLITS}

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        for f in self.files:
            if split is not None and f.split != split:
                continue
            for p in (f.before, f.after):
                if not p.is_file():
                    raise InputError(
                        f"{p}: image listed in {f.listed_in or self.root} is missing; expected "
                        f"{self._relative(f.before)} and {self._relative(f.after)} (or use on_missing='skip')"
                    )
            pair_id = f"{self.name}_{id_part(f.before.stem)}"
            a, b, names = read_pair_images(f.before, f.after, pair_id)
            bands = resolve_band_names(a.shape[2], self.band_names, names, f.before, self.band_defaults)
            yield BitemporalPair(
                pair_id=pair_id,
                before=a,
                after=b,
                bands=bands,
                display_bands=resolve_display(self.display, bands, str(f.before)),
                captions=list(f.captions),
                source=self.name,
                split=f.split,
                dates=self.dates,
                changed=f.changed,
                location={"kind": self.name, "before": str(f.before), "after": str(f.after)},
                archive=f.archive,
            )

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
