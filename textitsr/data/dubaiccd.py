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

from pathlib import Path

from textitsr.data.captioned import CaptionedPairSource, PairFiles
from textitsr.data.levircc import parse_caption_json
from textitsr.errors import InputError

CAPTION_FILES = {
    "train": "Train_Dubai_CC.json",
    "val": "Validation_Dubai_CC.json",
    "test": "Test_Dubai_CC.json",
}
BEFORE_DIR, AFTER_DIR = "500_2000", "500_2010"
DATES = ("2000-01-01", "2010-01-01")
ETM_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


class DubaiCCDSource(CaptionedPairSource):
    """Pairs of a Dubai-CCD root; band_names, display and on_missing as in `CaptionedPairSource`."""

    name = "dubaiccd"
    dates = DATES
    band_defaults = {6: ETM_BANDS}

    def __init__(
        self,
        root: Path,
        captions_dir: Path | None = None,
        band_names: tuple[str, ...] | None = None,
        display: str | tuple[str, ...] | None = None,
        on_missing: str = "error",
    ) -> None:
        self.captions_dir = Path(captions_dir) if captions_dir else Path(root)
        super().__init__(root, band_names=band_names, display=display, on_missing=on_missing)

    def _load_files(self) -> list[PairFiles]:
        for folder in (BEFORE_DIR, AFTER_DIR):
            if not (self.root / folder).is_dir():
                raise InputError(
                    f"{self.root / folder}: Dubai-CCD image folder not found (expected {folder}/)"
                )
        files = []
        for split, fname in CAPTION_FILES.items():
            path = self.captions_dir / fname
            if not path.is_file():
                raise InputError(f"{path}: Dubai-CCD caption file for split {split!r} not found")
            for rec in parse_caption_json(path):
                # The split comes from the file a record sits in; its own field must agree.
                if rec.split != split:
                    raise InputError(f"{path}: {rec.filename} has split {rec.split!r}; expected {split!r}")
                before, after = self.root / BEFORE_DIR / rec.filename, self.root / AFTER_DIR / rec.filename
                files.append(PairFiles(before, after, rec.captions, split, listed_in=fname))
        return files
