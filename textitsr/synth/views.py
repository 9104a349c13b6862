"""Augmented views of real labelled pairs: more of what the probes learn from, without new labels.

Why: the probes are fitted on a few hundred real pairs, and an analyst's archive differs from them in
orientation, radiometry (each date its own), resolution and band choice. A view applies one random
dihedral transform to both dates plus one of those differences; its labels and captions stay true
(a rotated, blurred or grey new road is still a new road, and two differently stretched dates of
an unchanged field are still unchanged). Under the leave-source-out protocol, training on views in
place of a real pair's repeats and fitting the probes on the pool plus its views beat the pool alone
(benchmarks/results/real-leave-source-out.md).

A view changes only what differs between sensors, archives and acquisition days, so a real pair's
label stays exact: the `season` view draws `augment.jitter`'s season, haze and noise for each date,
never its mis-registration.
A view folder lives in the data cache and has the pool layout of its original (same names, so the
same sources, folds and captions), plus `views.json`, by which it is recognised and reused.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from textitsr.errors import InputError
from textitsr.synth.augment import jitter

#: How a view differs from its pair, besides a rotation or flip: `photometric` stretches each date
#: on its own (gain per band, gamma), `resolution` blurs both as a coarser sensor would (1.5-3.5x),
#: `colour` shows both dates in grey or with the bands swapped (false-colour composites), `season`
#: gives each date its own season, haze, saturation and sharpness (`augment.jitter`, no shift).
VIEW_KINDS = ("photometric", "resolution", "colour", "season")
#: How strong a `season` view's per-date appearance change is (`augment.jitter`'s strength).
SEASON_STRENGTH = 1.5
VIEWS_FILE = "views.json"
VIEWS_FORMAT = "textitsr-pair-views"
#: Bumped when the transforms change, so an old view folder is rewritten, not reused.
VIEWS_VERSION = 1


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/flips (k in 0..7) of an (H, W, 3) image."""
    out = np.rot90(image, k % 4)
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def _stretch(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A different radiometric stretch: overall and per-band gain, and gamma."""
    x = image.astype(np.float32) / 255.0
    x = x * (1.0 + rng.uniform(-strength, strength) + 0.5 * rng.uniform(-strength, strength, 3))
    x = np.clip(x, 0.0, 1.0) ** np.exp(0.5 * rng.uniform(-strength, strength))
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _coarser(image: np.ndarray, factor: float) -> np.ndarray:
    """The image as a sensor `factor` times coarser would see it, shown at the same size."""
    h, w = image.shape[:2]
    size = (max(8, round(w / factor)), max(8, round(h / factor)))
    small = Image.fromarray(image).resize(size, Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, axis=2)


def make_view(
    before: np.ndarray, after: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A view of one pair (uint8 RGB arrays of one shape): what `VIEW_KINDS` describes."""
    if kind not in VIEW_KINDS:
        raise InputError(f"view kind {kind!r}: expected one of {', '.join(VIEW_KINDS)}")
    k = int(rng.integers(1, 8))
    before, after = _dihedral(before, k), _dihedral(after, k)
    if kind == "photometric":
        return _stretch(before, rng, 0.25), _stretch(after, rng, 0.25)
    if kind == "season":
        return jitter(before, rng, SEASON_STRENGTH), jitter(after, rng, SEASON_STRENGTH)
    if kind == "resolution":
        factor = float(rng.uniform(1.5, 3.5))
        return _stretch(_coarser(before, factor), rng, 0.15), _stretch(_coarser(after, factor), rng, 0.15)
    if rng.random() < 0.5:
        return _grey(before), _grey(after)
    bands = rng.permutation(3)
    return before[..., bands], after[..., bands]


def _fingerprint(folder: Path, kind: str, seed: int) -> str:
    """What a view folder is made from: the pool's listing, image names and sizes, and the settings."""
    h = hashlib.sha256(json.dumps([VIEWS_VERSION, kind, seed]).encode())
    h.update((folder / "pairs.jsonl").read_bytes())
    for sub in ("before", "after"):
        for p in sorted((folder / sub).iterdir()):
            h.update(f"{sub}/{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def write_views(folder: Path, out: Path, kind: str, seed: int = 0, paraphrased: bool = False) -> Path:
    """A view of every pair of the pool `folder`, written to `out` (atomically; reused when `out`
    already holds the views of this folder, kind and seed). `paraphrased`: the views' captions are
    paraphrases of the pairs' (`synth.paraphrase`; the images are the same as without). Returns `out`."""
    from textitsr.atomic import atomic_dir

    folder, out = Path(folder), Path(out)
    if kind not in VIEW_KINDS:
        raise InputError(f"view kind {kind!r}: expected one of {', '.join(VIEW_KINDS)}")
    for need in ("pairs.jsonl", "captions.csv", "before", "after"):
        if not (folder / need).exists():
            raise InputError(f"{folder}: no {need}; expected a labelled pool folder (realdev layout)")
    stamp = {"format": VIEWS_FORMAT, "kind": kind, "seed": seed, "of": _fingerprint(folder, kind, seed)}
    if paraphrased:
        stamp["paraphrased"] = True
    try:
        if json.loads((out / VIEWS_FILE).read_text(encoding="utf-8")) == stamp:
            return out
    except (OSError, json.JSONDecodeError):
        pass
    rng = np.random.default_rng([seed, VIEW_KINDS.index(kind)])
    with atomic_dir(out) as tmp:
        for sub in ("before", "after"):
            (tmp / sub).mkdir()
        if paraphrased:
            _write_paraphrased_captions(folder, tmp, np.random.default_rng([seed, VIEW_KINDS.index(kind), 1]))
        else:
            for name in ("pairs.jsonl", "captions.csv"):
                shutil.copyfile(folder / name, tmp / name)
        for path in sorted((folder / "before").iterdir()):
            other = folder / "after" / path.name
            if not other.is_file():
                raise InputError(f"{folder}/after: no {path.name}; every before image needs an after image")
            before = np.asarray(Image.open(path).convert("RGB"))
            after = np.asarray(Image.open(other).convert("RGB"))
            if before.shape != after.shape:
                raise InputError(
                    f"{folder}: {path.name} is {before.shape[:2]} before and {after.shape[:2]} after; "
                    "expected one size"
                )
            b, a = make_view(before, after, kind, rng)
            Image.fromarray(b).save(tmp / "before" / path.name)
            Image.fromarray(a).save(tmp / "after" / path.name)
        (tmp / VIEWS_FILE).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
    return out


def _write_paraphrased_captions(folder: Path, out: Path, rng: np.random.Generator) -> None:
    """The pool `folder`'s captions.csv and pairs.jsonl, written to `out` with every caption (and
    pairs.jsonl's own caption lists) replaced by a paraphrase of it."""
    from textitsr.data.folder import jsonl_objects
    from textitsr.synth.paraphrase import paraphrase

    path = folder / "captions.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "caption" not in rows[0]:
        raise InputError(f"{path}: no caption column; expected the realdev layout (filename,caption)")
    with (out / "captions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["filename", "caption"])
        writer.writeheader()
        writer.writerows({**row, "caption": paraphrase(row["caption"], rng)} for row in rows)
    records = []
    for _, record in jsonl_objects(folder / "pairs.jsonl"):
        if isinstance(record, dict) and isinstance(record.get("captions"), list):
            record["captions"] = [paraphrase(c, rng) if isinstance(c, str) else c for c in record["captions"]]
        records.append(json.dumps(record))
    (out / "pairs.jsonl").write_text("".join(r + "\n" for r in records), encoding="utf-8")


def view_folders(
    folders: Sequence[Path], cache_root: Path, kinds: Sequence[str], seed: int = 0, paraphrased: bool = False
) -> dict[str, list[Path]]:
    """{kind: the view folder of each pool folder}, written under `cache_root/views/` as needed."""
    out: dict[str, list[Path]] = {}
    suffix = "-paraphrased" if paraphrased else ""
    for kind in kinds:
        out[kind] = [
            write_views(f, Path(cache_root) / "views" / f"{kind}{suffix}-{_tag(f)}", kind, seed, paraphrased)
            for f in folders
        ]
    return out


def _tag(folder: Path) -> str:
    """A readable, collision-free folder name for a pool folder's views."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"{Path(folder).name}-{digest}"
