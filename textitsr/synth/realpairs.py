"""Captioned training pairs from real bitemporal imagery: change-detection pairs and time series.

Why: besides fabricated changes (`realsynth`), the model should see real change between two real
acquisitions. Change-detection pairs come with masks, so their captions are written from the mask
(type, count, place); time series come without labels, so their captions are written from spectral
change (NDVI, NDWI via `describe.change_stats`), only where the indices are unambiguous.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from textitsr.data.describe import DEFAULT_THRESHOLDS, _index, change_stats, describe_change
from textitsr.data.pairs import BitemporalPair
from textitsr.errors import InputError
from textitsr.synth.caption_bank import CaptionBank, place_of
from textitsr.synth.realsynth import MIN_INSTANCE

#: A fraction of the tile below this is no change worth a caption; above MIN_TYPE it names the type.
MIN_TYPE = 0.05


@dataclass
class LabelledPair:
    """A real pair (uint8 RGB) with the change type read from its mask or its spectra."""

    name: str
    before: np.ndarray
    after: np.ndarray
    change_type: str
    count: int | None
    place: str | None
    extra_captions: tuple[str, ...] = ()
    #: The changed pixels, when a mask says so (augmented copies re-derive the place from it).
    mask: np.ndarray | None = None


def _png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    return np.asarray(Image.open(path).convert("RGB"))


def _count(mask: np.ndarray) -> int:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    return int((sizes >= MIN_INSTANCE).sum())


def change_detection_pairs(realtrain: Path, samples: Path | None = None) -> Iterator[LabelledPair]:
    """realtrain/pairs (LEVIR-CD building change, IdaBD damage) and LEVIR-CD samples (A/B/label).

    LEVIR-CD masks mark new (rarely removed) buildings: a mask with instances is "buildings_built",
    an empty one "none". IdaBD masks grade damage on building footprints: instances of the highest
    grade (destroyed) make "buildings_demolished"; pairs with only lower grades (damaged roofs,
    debris) fit no type and are left out.
    """
    index = Path(realtrain) / "pairs" / "pairs.jsonl"
    if not index.is_file():
        raise InputError(f"{index}: not found; expected realtrain/pairs/pairs.jsonl")
    for line in index.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        meta = json.loads(line)
        base = index.parent
        mask = np.asarray(Image.open(base / "masks" / f"{meta['name']}.png"))
        if meta["mask_scheme"] == "binary_change":
            changed = mask > 0
            kind = "buildings_built" if _count(changed) else "none"
        elif meta["mask_scheme"] == "xbd_damage_dahitra":
            changed = mask >= 3
            if not _count(changed):
                continue
            kind = "buildings_demolished"
        else:
            raise InputError(f"{index}: {meta['name']}: mask_scheme {meta['mask_scheme']!r} is not known")
        yield LabelledPair(
            meta["name"],
            _png(base / "before" / f"{meta['name']}.png"),
            _png(base / "after" / f"{meta['name']}.png"),
            kind,
            _count(changed) or None,
            place_of(changed),
            mask=changed,
        )
    if samples is not None and (Path(samples) / "label").is_dir():
        for label in sorted((Path(samples) / "label").glob("*.png")):
            changed = np.asarray(Image.open(label).convert("L")) > 127
            n = _count(changed)
            yield LabelledPair(
                f"levircd_sample_{label.stem}",
                _png(Path(samples) / "A" / label.name),
                _png(Path(samples) / "B" / label.name),
                "buildings_built" if n else "none",
                n or None,
                place_of(changed),
                mask=changed,
            )


def spectral_label(pair: BitemporalPair, kinds: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(change type, place) from NDVI/NDWI change, restricted to `kinds`; None when ambiguous.

    "none" only when nothing in `kinds` moved over more than 1% of the tile. Place comes from the
    pixels that changed (NDVI drop/rise, NDWI water gain/loss).
    """
    stats = change_stats(pair)
    if stats is None:
        return None
    t = DEFAULT_THRESHOLDS
    ndvi_b, _ = _index(pair.band("before", "nir"), pair.band("before", "red"))
    ndvi_a, _ = _index(pair.band("after", "nir"), pair.band("after", "red"))
    masks = {
        "vegetation_cleared": (
            stats["vegetation_loss"],
            (ndvi_a - ndvi_b < -t.ndvi_change) & (ndvi_b > t.vegetation_ndvi),
        ),
        "vegetation_grown": (
            stats["vegetation_gain"],
            (ndvi_a - ndvi_b > t.ndvi_change) & (ndvi_a > t.vegetation_ndvi),
        ),
    }
    if "green" in pair.bands:
        wb = _index(pair.band("before", "green"), pair.band("before", "nir"))[0] > t.water_ndwi
        wa = _index(pair.band("after", "green"), pair.band("after", "nir"))[0] > t.water_ndwi
        masks |= {
            "water_expanded": (stats["water_gain"], wa & ~wb),
            "water_receded": (stats["water_loss"], wb & ~wa),
        }
    fractions = {k: v for k, v in masks.items() if k in kinds}
    if not fractions:
        return None
    best = max(fractions, key=lambda k: fractions[k][0])
    others = max([v[0] for k, v in fractions.items() if k != best], default=0.0)
    if fractions[best][0] < 0.01:
        return "none", None
    if fractions[best][0] >= MIN_TYPE and fractions[best][0] > 2 * others:
        return best, place_of(fractions[best][1])
    return None


def time_series_pairs(
    root: Path, kinds: tuple[str, ...], describe: bool = True, **options: object
) -> Iterator[LabelledPair]:
    """Every date pair of every tile of a GeoTIFF series whose spectral change is unambiguous.

    `kinds` limits the types read from the spectra (NAIP farmland: only water, since crop cycles
    move NDVI every year; Landsat forest: vegetation). The pixels kept are the display composite.
    `describe` adds the spectral sentence of `describe_change` as one more caption.
    """
    from textitsr.data.geotiff import GeoTiffSource

    source = GeoTiffSource(root, pairing="all", **options)
    for pair in source.pairs():
        label = spectral_label(pair, kinds)
        if label is None:
            continue
        sentence = describe_change(pair) if describe else None
        yield LabelledPair(
            pair.pair_id,
            pair.rgb("before"),
            pair.rgb("after"),
            label[0],
            None,
            label[1],
            (sentence,) if sentence and label[0] != "none" else (),
        )


def captions_for(item: LabelledPair, bank: CaptionBank, rng: np.random.Generator) -> list[str]:
    """Captions of a labelled real pair: bank/template sentences plus any spectral sentence."""
    return bank.draw(item.change_type, item.count, item.place, rng) + list(item.extra_captions)
