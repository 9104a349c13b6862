"""The leave-source-out protocol: real labelled pairs grouped by source, folds that never split one.

Why: a recipe chosen on one small real set (realdev) flatters itself on that set. Here every real
labelled pair carries its `source` (one dataset, event or sensor); sources are dealt into k folds of
similar pair counts, each fold's model is trained without its sources (real pairs AND generated
pairs made from them) and scored on a gallery of all their pairs. Model choices use the mean over
folds.

A pool is a list of folders in the realdev layout (`before/`, `after/`, `captions.csv`,
`pairs.jsonl` with `change_types`, optional `label/` masks). A pair's source is its pairs.jsonl
`source`, else read from its `dataset` (realdev). The real change pairs of `realtrain/pairs` and of
`levircd-samples` are written into that layout once (`derive_change_pairs`), captioned from their
masks the way the generated training data captions them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from textitsr.data.folder import jsonl_objects
from textitsr.errors import InputError

#: Source names of datasets whose `dataset` field carries extra detail (split, event, processing).
_DATASET_SOURCES = (
    (re.compile(r"^LEVIR-CD\b", re.I), "LEVIR-CD"),
    (re.compile(r"^IdaBD\b", re.I), "IdaBD"),
    (re.compile(r"^Joplin\b", re.I), "Joplin tornado"),
    (re.compile(r"^xBD \(([^,)]+)", re.I), r"xBD \1"),
)
#: Generated training pairs are named after what they were made from: tile or pair name prefixes
#: of the sources that are also pool sources, so a fold can drop them with its real pairs.
_ORIGIN_SOURCES = (
    ("levircd", "LEVIR-CD"),
    ("idabd", "IdaBD"),
    ("xbd_guatemala", "xBD guatemala-volcano"),
    # the time series part: NAIP North Dakota tiles (file names m_4709963_*) and Landsat Pucallpa,
    # the same opengeos/data rasters a pool folder may hold as real pairs
    ("m_4709963", "naip-northdakota"),
    ("landsat", "landsat-pucallpa"),
)
#: Hamming distance of 16x16 average hashes at or below which two images count as one.
DUPLICATE_HASH_DISTANCE = 4
POOL_FILE = "pairs.jsonl"
DERIVED_DIR = "realpairs-pool"


def source_of(meta: dict) -> str:
    """The source of one pairs.jsonl record: its `source`, else derived from its `dataset`."""
    source = meta.get("source")
    if isinstance(source, str) and source.strip():
        return source.strip()
    dataset = meta.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise InputError(f"pair {meta.get('name')!r}: no 'source' or 'dataset' to group it by")
    for pattern, name in _DATASET_SOURCES:
        match = pattern.match(dataset.strip())
        if match:
            return match.expand(name)
    return dataset.strip()


def generated_source(origin: str) -> str | None:
    """The pool source a generated pair was made from (by its origin name), None for the others."""
    low = origin.lower()
    return next((source for prefix, source in _ORIGIN_SOURCES if low.startswith(prefix)), None)


def read_sources(root: Path) -> dict[str, str]:
    """{image file stem: source} of a pool folder's pairs.jsonl."""
    path = Path(root) / POOL_FILE
    if not path.is_file():
        raise InputError(f"{path}: not found; a pool folder needs pairs.jsonl with source/change_types")
    out = {}
    for line, obj in jsonl_objects(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise InputError(f'{path}:{line}: expected {{"name": "...", "source": "...", ...}}')
        try:
            out[Path(obj["name"]).stem] = source_of(obj)
        except InputError as err:
            raise InputError(f"{path}:{line}: {err}") from err
    return out


def group_folds(sources: Sequence[str], k: int) -> list[tuple[str, ...]]:
    """Deal the distinct sources into `k` folds of similar pair counts (largest source first, each
    into the fold with the fewest pairs so far); a source is never split. Fewer sources than `k`
    give one fold per source. Deterministic: ties go by name."""
    if k < 2:
        raise InputError(f"leave-source-out: need at least 2 folds, got {k}")
    counts: dict[str, int] = {}
    for s in sources:
        counts[s] = counts.get(s, 0) + 1
    if len(counts) < 2:
        raise InputError(f"leave-source-out: need pairs from at least 2 sources, got {sorted(counts)}")
    folds: list[list[str]] = [[] for _ in range(min(k, len(counts)))]
    sizes = [0] * len(folds)
    for source in sorted(counts, key=lambda s: (-counts[s], s)):
        i = int(np.argmin(sizes))
        folds[i].append(source)
        sizes[i] += counts[source]
    return [tuple(sorted(f)) for f in folds]


def average_hash(image: np.ndarray, size: int = 16) -> np.ndarray:
    """(size*size,) bool: pixels of the grey, downsized image above its mean (duplicate check)."""
    grey = (
        Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("L").resize((size, size), Image.BILINEAR)
    )
    a = np.asarray(grey, dtype=np.float32)
    return (a > a.mean()).ravel()


@dataclass
class _Known:
    hashes: list[np.ndarray]

    def seen(self, *images: np.ndarray) -> bool:
        """Whether any image is near one already known; else all of them become known."""
        new = [average_hash(im) for im in images]
        if any(int((h != k).sum()) <= DUPLICATE_HASH_DISTANCE for h in new for k in self.hashes):
            return True
        self.hashes += new
        return False


def derive_change_pairs(shared: Path, out: Path, against: Sequence[Path] = (), seed: int = 0) -> Path:
    """Write realtrain's change pairs and the LEVIR-CD samples into `out` in the pool layout.

    Captions come from the masks exactly as the generated data's unaugmented copy (`realpairs`
    part, copy 0) has them; the change types likewise (LEVIR-CD: built or none; IdaBD: destroyed
    buildings). A pair whose before or after image duplicates one of an `against` folder (by average
    hash) or an earlier pair is left out. Written atomically; reused when already there.
    """
    import csv
    import io
    import json

    from textitsr.atomic import atomic_dir
    from textitsr.synth.caption_bank import CaptionBank
    from textitsr.synth.realpairs import captions_for, change_detection_pairs
    from textitsr.synth.training_data import _rng

    out = Path(out)
    if (out / POOL_FILE).is_file():
        return out
    known = _Known([])
    for folder in against:
        for sub in ("before", "after"):
            for p in sorted((Path(folder) / sub).glob("*.png")):
                known.hashes.append(average_hash(np.asarray(Image.open(p).convert("RGB"))))
    bank_file = Path(shared) / "levircc-captions.json"
    bank = CaptionBank.from_levircc(bank_file) if bank_file.is_file() else CaptionBank.empty()
    with atomic_dir(out) as tmp:
        for sub in ("before", "after", "label"):
            (tmp / sub).mkdir()
        rows, caps = [], io.StringIO()
        writer = csv.writer(caps)
        writer.writerow(["filename", "caption", "split"])
        for item in change_detection_pairs(Path(shared) / "realtrain", Path(shared) / "levircd-samples"):
            if known.seen(item.before, item.after):
                continue
            name = f"{item.name}.png"
            Image.fromarray(item.before).save(tmp / "before" / name)
            Image.fromarray(item.after).save(tmp / "after" / name)
            if item.mask is not None:
                Image.fromarray(item.mask.astype(np.uint8) * 255).save(tmp / "label" / name)
            for caption in captions_for(item, bank, _rng(seed, "realpairs", item.name, 0)):
                writer.writerow([name, caption, "val"])
            source = "IdaBD" if item.name.startswith("idabd") else "LEVIR-CD"
            rows.append(
                {
                    "name": item.name,
                    "source": source,
                    "change_types": [item.change_type],
                    "mask": f"label/{name}" if item.mask is not None else None,
                }
            )
        (tmp / "captions.csv").write_text(caps.getvalue(), encoding="utf-8")
        (tmp / POOL_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out
