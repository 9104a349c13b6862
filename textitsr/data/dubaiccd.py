"""Dubai-CCD (Hoxha et al., 2022): 500 Landsat-7 ETM+ crops of Dubai, 2000 vs 2010, 5 captions each.

Official layout (research use)::

    ROOT/500_2000/<R>x<C>.tif     before (50x50 px, 30 m)
    ROOT/500_2010/<R>x<C>.tif     after
    ROOT/Train_Dubai_CC.json, Validation_Dubai_CC.json, Test_Dubai_CC.json   (300 / 50 / 150 pairs)

The caption JSONs may also live elsewhere (`captions_dir`). Bands: names from the TIFF band
descriptions when present, else by band count: 3 -> RGB, 4 -> RGB+NIR, 6 -> the ETM+ reflective bands
1-5,7 (blue, green, red, nir, swir1, swir2), 1 -> grey; `band_names` overrides. Dates are the
acquisition years, given as YYYY-01-01 (year precision).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from textitsr.data.imageio import (
    normalise_band_name,
    read_pair_images,
    resolve_band_names,
    resolve_display,
)
from textitsr.data.levircc import CaptionRecord, parse_caption_json
from textitsr.data.pairs import BitemporalPair, id_part
from textitsr.errors import InputError

CAPTION_FILES = {
    "train": "Train_Dubai_CC.json",
    "val": "Validation_Dubai_CC.json",
    "test": "Test_Dubai_CC.json",
}
BEFORE_DIR, AFTER_DIR = "500_2000", "500_2010"
DATES = ("2000-01-01", "2010-01-01")
ETM_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


class DubaiCCDSource:
    """Pairs of a Dubai-CCD root; `on_missing` as in `LevirCCSource` ("error" or "skip")."""

    name = "dubaiccd"

    def __init__(
        self,
        root: Path,
        captions_dir: Path | None = None,
        band_names: tuple[str, ...] | None = None,
        display: str | tuple[str, ...] | None = None,
        on_missing: str = "error",
    ) -> None:
        self.root = Path(root)
        if on_missing not in ("error", "skip"):
            raise InputError(f"on_missing={on_missing!r}: expected 'error' or 'skip'")
        self.band_names = tuple(normalise_band_name(b) for b in band_names) if band_names else None
        self.display = display
        cap_dir = Path(captions_dir) if captions_dir else self.root
        for folder in (BEFORE_DIR, AFTER_DIR):
            if not (self.root / folder).is_dir():
                raise InputError(
                    f"{self.root / folder}: Dubai-CCD image folder not found (expected {folder}/)"
                )
        records: list[CaptionRecord] = []
        for split, fname in CAPTION_FILES.items():
            path = cap_dir / fname
            if not path.is_file():
                raise InputError(f"{path}: Dubai-CCD caption file for split {split!r} not found")
            for rec in parse_caption_json(path):
                # The split comes from the file a record sits in; its own field must agree.
                if rec.split != split:
                    raise InputError(f"{path}: {rec.filename} has split {rec.split!r}; expected {split!r}")
                records.append(rec)
        if on_missing == "skip":
            records = [r for r in records if all(p.is_file() for p in self._paths(r))]
        self.records = records

    def _paths(self, rec: CaptionRecord) -> tuple[Path, Path]:
        return self.root / BEFORE_DIR / rec.filename, self.root / AFTER_DIR / rec.filename

    def __len__(self) -> int:
        return len(self.records)

    def pairs(self, split: str | None = None) -> Iterator[BitemporalPair]:
        for rec in self.records:
            if split is not None and rec.split != split:
                continue
            before, after = self._paths(rec)
            for p in (before, after):
                if not p.is_file():
                    raise InputError(
                        f"{p}: image listed in {CAPTION_FILES[rec.split]} is missing; expected "
                        f"{BEFORE_DIR}/ and {AFTER_DIR}/{rec.filename} (or use on_missing='skip')"
                    )
            pair_id = f"dubaiccd_{id_part(Path(rec.filename).stem)}"
            a, b, names = read_pair_images(before, after, pair_id)
            bands = resolve_band_names(a.shape[2], self.band_names, names, before, {6: ETM_BANDS})
            yield BitemporalPair(
                pair_id=pair_id,
                before=a,
                after=b,
                bands=bands,
                display_bands=resolve_display(self.display, bands, str(before)),
                captions=list(rec.captions),
                source=self.name,
                split=rec.split,
                dates=DATES,
                location={"kind": self.name, "before": str(before), "after": str(after)},
            )
