"""Rebuild the real bitemporal pool (`realpool`) from local git mirrors of public repositories.

The pool is research data and never lives in this repository: this script and `sources.json`
(repo @ commit, paths, crop box, band choice, labels, captions, licence per pair) are the recipe.
Every output image is refused when it matches `reserved-images.json` (held-out evaluation images:
decoded-pixel sha1, or a 16x16 average hash within Hamming distance 4 of the whole image, a
quadrant or a 256 px window), so a rebuilt pool cannot leak held-out pairs into training.

    .venv/bin/python benchmarks/realpool/build_pool.py --mirrors /work/.mirror --out ../realpool
    .venv/bin/python benchmarks/realpool/build_pool.py --only egy-bcd --out /tmp/pool   # one source

Mirrors are bare git directories `<mirrors>/<owner>+<name>/repo` (as the fetch tool makes them);
files are read with `git show <commit>:<path>`, so nothing is checked out.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_MANIFEST = HERE / "sources.json"
#: ../shared beside the repository, as the rest of the project expects it.
DEFAULT_RESERVED = HERE.parents[1] / ".." / "shared" / "data" / "reserved-images.json"
TILE = 256
AHASH_MATCH = 4  # Hamming distance at or below which two 16x16 average hashes are the same image
CHANGE_TYPES = {
    "buildings_built",
    "buildings_demolished",
    "road_built",
    "vegetation_cleared",
    "water_expanded",
    "water_receded",
    "vegetation_grown",
    "other",
    "none",
}


class ManifestError(ValueError):
    """A manifest entry is malformed or points at a file the mirror does not hold."""


# ---- reading source files -------------------------------------------------------------------


def mirror_dir(mirrors: Path, repo: str) -> Path:
    """Bare git directory of `owner/name` under the fetch tool's mirror root."""
    path = mirrors / repo.replace("/", "+") / "repo"
    if not path.is_dir():
        raise ManifestError(f"no mirror of {repo} at {path}: fetch github:{repo} first")
    if (path / ".git").is_dir():  # some snapshots arrive as a checkout rather than a bare repository
        return path / ".git"
    return path


def git_blob(mirrors: Path, repo: str, commit: str, path: str) -> bytes:
    """Bytes of `path` at `commit` in the mirror of `repo`."""
    proc = subprocess.run(
        ["git", "--git-dir", str(mirror_dir(mirrors, repo)), "show", f"{commit}:{path}"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ManifestError(f"{repo}@{commit[:8]}:{path}: {proc.stderr.decode().strip()}")
    return proc.stdout


def notebook_image(data: bytes, spec: dict) -> bytes:
    """The bytes of one image output (figure or animated GIF) embedded in a Jupyter notebook."""
    cell, output = spec.get("cell"), spec.get("output", 0)
    try:
        bundle = json.loads(data)["cells"][cell]["outputs"][output]["data"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ManifestError(f"{spec['path']}: no output {output} in cell {cell} of the notebook") from exc
    for mime in ("image/png", "image/gif", "image/jpeg"):
        if mime in bundle:
            return base64.b64decode(bundle[mime])
    raise ManifestError(f"{spec['path']}: output {output} of cell {cell} holds no PNG, GIF or JPEG image")


def archive_bands(data: bytes, spec: dict) -> np.ndarray:
    """Stack band 1 of the archive members named in `members` (e.g. a Landsat scene's B4, B3, B2 files)."""
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    members = spec.get("members")
    if not members:
        raise ManifestError(f"{spec['path']}: an archive needs 'members' (the band files to stack)")
    bands = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in members:
            try:
                raw = archive.extractfile(member)
            except KeyError as exc:
                raise ManifestError(f"{spec['path']}: no member {member} in the archive") from exc
            if raw is None:
                raise ManifestError(f"{spec['path']}: member {member} is not a file")
            with warnings.catch_warnings():  # cropped sample scenes may carry no geotransform
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with MemoryFile(raw.read()) as mem, mem.open() as src:
                    bands.append(src.read(1).astype(np.float32))
    return np.stack(bands, axis=-1)


def decode_raster(data: bytes, spec: dict) -> np.ndarray:
    """Image bytes -> float32 HxWxC array in source units; GeoTIFFs are read with rasterio."""
    name = spec["path"].lower()
    if name.endswith(".ipynb"):  # a figure or time-lapse GIF that a notebook keeps in its outputs
        data = notebook_image(data, spec)
    if name.endswith((".tar.gz", ".tgz")):  # a scene archive with one GeoTIFF per band
        return archive_bands(data, spec)
    if name.endswith((".tif", ".tiff")):
        from rasterio.io import MemoryFile

        with MemoryFile(data) as mem, mem.open() as src:
            bands = spec.get("bands") or list(range(1, min(src.count, 3) + 1))
            arr = src.read(bands).astype(np.float32)
        if spec.get("kind") == "mask":  # a single-band GeoTIFF change mask
            return arr[0]
        return np.moveaxis(arr, 0, -1)
    if name.endswith(".npy"):
        arr = np.load(io.BytesIO(data))
        index = spec.get("index")
        if index is not None:
            arr = arr[tuple(index)]
        bands = spec.get("bands")
        if bands is not None:
            arr = arr[..., [b - 1 for b in bands]]
        return arr.astype(np.float32)
    with Image.open(io.BytesIO(data)) as im:
        if spec.get("frame"):  # one frame of an animated time-series GIF
            im.seek(spec["frame"])
        mode = "L" if spec.get("kind") == "mask" else "RGB"
        return np.asarray(im.convert(mode), dtype=np.float32)


def to_uint8(arr: np.ndarray, stretch: list | None) -> np.ndarray:
    """Scale source units to 0..255: none (already 8 bit) or a linear [lo, hi] (per band if nested)."""
    if stretch is None:
        return np.clip(arr, 0, 255).astype(np.uint8)
    lo, hi = np.asarray(stretch[0], dtype=np.float32), np.asarray(stretch[1], dtype=np.float32)
    scaled = (arr - lo) / np.maximum(hi - lo, 1e-6) * 255.0
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)


def load_image(mirrors: Path, pair: dict, source: dict, key: str) -> Image.Image:
    """Crop (and if needed resize) one date or the mask of a pair to TILE x TILE."""
    spec = pair[key]
    repo = spec.get("repo", pair.get("repo", source["repo"]))  # one event may come from several repositories
    commit = spec.get("commit", pair.get("commit", source["commit"]))
    arr = decode_raster(git_blob(mirrors, repo, commit, spec["path"]), spec)
    stretch_arr = arr
    box = spec.get("crop_box_xyxy", pair["crop_box_xyxy"])  # a figure panel may sit elsewhere per date
    x0, y0, x1, y1 = box
    if x1 > arr.shape[1] or y1 > arr.shape[0]:
        raise ManifestError(f"{pair['name']}: crop {box} outside {spec['path']} {arr.shape[:2]}")
    if spec.get("kind") == "palette":  # a colour-coded class map -> class ids (0 = no class within tolerance)
        crop = arr[y0:y1, x0:x1]
        ids = np.zeros(crop.shape[:2], dtype=np.uint8)
        best = np.full(crop.shape[:2], 60.0**2)  # squared RGB distance tolerance
        for class_id, rgb in spec["palette"].items():
            dist = ((crop - np.asarray(rgb, dtype=np.float32)) ** 2).sum(axis=2)
            ids[dist < best] = int(class_id)
            best = np.minimum(best, dist)
        img = Image.fromarray(ids, "L")
        return img if img.size == (TILE, TILE) else img.resize((TILE, TILE), Image.NEAREST)
    if spec.get("kind") in ("mask", "red_overlay"):
        crop = arr[y0:y1, x0:x1]
        values = spec.get("change_values")
        if spec["kind"] == "red_overlay":  # a change mask drawn in pure red over the image (paper figures)
            hit = (crop[..., 0] - np.maximum(crop[..., 1], crop[..., 2]) > 90) & (crop[..., 1] < 110)
        else:
            hit = np.isin(crop, values) if values else crop > spec.get("threshold", 0)
        img = Image.fromarray((hit * 255).astype(np.uint8), "L")
        return img if img.size == (TILE, TILE) else img.resize((TILE, TILE), Image.NEAREST)
    stretch = spec.get("stretch")
    if isinstance(stretch, str) and spec.get("stretch_on") == "crop":
        stretch_arr = arr[y0:y1, x0:x1]
    if isinstance(stretch, str):  # "pLO-pHI": per-band percentiles of the whole image (or the crop)
        lo_p, hi_p = (float(v) for v in stretch.lstrip("p").split("-"))
        stretch = [
            np.percentile(stretch_arr, lo_p, axis=(0, 1)),
            np.percentile(stretch_arr, hi_p, axis=(0, 1)),
        ]
    crop = to_uint8(arr[y0:y1, x0:x1], stretch)
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    img = Image.fromarray(crop[..., :3], "RGB")
    return img if img.size == (TILE, TILE) else img.resize((TILE, TILE), Image.BICUBIC)


def load_mask(mirrors: Path, pair: dict, source: dict) -> Image.Image | None:
    """The pair's change mask; a list of label specs (e.g. 'buildings gone' + 'buildings new') is OR-ed."""
    specs = pair.get("label")
    if not specs:
        return None
    if isinstance(specs, dict):
        return load_image(mirrors, pair, source, "label")
    union = np.zeros((TILE, TILE), dtype=bool)
    for spec in specs:
        union |= np.asarray(load_image(mirrors, {**pair, "label": spec}, source, "label")) > 0
    return Image.fromarray((union * 255).astype(np.uint8), "L")


# ---- held-out check -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reserved:
    """Hashes of held-out images (no names or paths): decoded-pixel sha1s and 256-bit average hashes."""

    sha1: frozenset[str]
    bits: np.ndarray  # (n, 256) uint8

    @classmethod
    def load(cls, path: Path) -> Reserved:
        rows = json.loads(path.read_text())
        nibbles = np.array([[int(c, 16) for c in r["ahash16"]] for r in rows], dtype=np.uint8)
        bits = np.unpackbits(nibbles[:, :, None], axis=2)[:, :, 4:].reshape(len(rows), 256)
        return cls(frozenset(r["px_sha1"] for r in rows), bits)

    def min_distance(self, img: Image.Image) -> int:
        """Smallest Hamming distance to a reserved hash over the image and its quadrants."""
        w, h = img.size
        views = [img] + [
            img.crop(b)
            for b in (
                (0, 0, w // 2, h // 2),
                (w // 2, 0, w, h // 2),
                (0, h // 2, w // 2, h),
                (w // 2, h // 2, w, h),
            )
        ]
        return min(int((self.bits != ahash_bits(v)).sum(axis=1).min()) for v in views)

    def pixel_match(self, img: Image.Image) -> bool:
        a = np.asarray(img.convert("RGB"))
        return hashlib.sha1(a.tobytes() + str(a.shape).encode()).hexdigest() in self.sha1


def ahash_bits(img: Image.Image) -> np.ndarray:
    grey = np.asarray(img.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32)
    return (grey > grey.mean()).flatten().astype(np.uint8)


# ---- writing the pool -----------------------------------------------------------------------


def validate(pair: dict, sources: dict) -> None:
    name = pair.get("name", "?")
    for field in ("name", "source", "before", "after", "crop_box_xyxy", "change_types", "captions"):
        if field not in pair:
            raise ManifestError(f"pair {name}: missing field '{field}'")
    if pair["source"] not in sources:
        raise ManifestError(f"pair {name}: source '{pair['source']}' is not listed under 'sources'")
    bad = set(pair["change_types"]) - CHANGE_TYPES
    if bad:
        raise ManifestError(
            f"pair {name}: unknown change types {sorted(bad)}; expected from {sorted(CHANGE_TYPES)}"
        )
    if len(pair["captions"]) != 3:
        raise ManifestError(f"pair {name}: expected 3 captions, got {len(pair['captions'])}")


def pair_record(
    pair: dict, source: dict, source_id: str, mask: Image.Image | None, dist: tuple[int, int]
) -> dict:
    """One pairs.jsonl row in the realdev layout plus provenance."""
    keys = [k for k in ("before", "after") if pair.get(k)]
    labels = pair.get("label") or []
    labels = [labels] if isinstance(labels, dict) else labels
    x0, y0, x1, y1 = pair["crop_box_xyxy"]
    fraction = None if mask is None else round(float((np.asarray(mask) > 0).mean()), 4)
    record = {
        "name": pair["name"],
        "source": source_id,
        "source_repo": pair.get("repo", source["repo"]),
        "source_commit": pair.get("commit", source["commit"]),
        "source_paths": [pair[k]["path"] for k in keys] + [spec["path"] for spec in labels],
        "crop_box_xyxy": pair["crop_box_xyxy"],
        "resampled": (x1 - x0, y1 - y0) != (TILE, TILE),
        "dataset": source["dataset"],
        "sensor_resolution": source["sensor_resolution"],
        "bands": pair["before"].get("band_names", source.get("band_names", "RGB")),
        "continent": pair.get("continent", source.get("continent")),
        "country": pair.get("country", source.get("country")),
        "place": pair.get("place", source.get("place")),
        "date_before": pair.get("date_before", source.get("date_before")),
        "date_after": pair.get("date_after", source.get("date_after")),
        "change_types": pair["change_types"],
        "change_fraction": fraction,
        "mask": f"label/{pair['name']}.png" if mask is not None else None,
        "mask_semantics": source.get("mask_semantics") if mask is not None else None,
        "captions": pair["captions"],
        "false_colour": bool(pair["before"].get("false_colour", False)),
        "licence": source["licence"],
        "hash_check": {"min_ahash_dist_before": dist[0], "min_ahash_dist_after": dist[1]},
    }
    for key in ("semantic_before", "semantic_after"):
        if pair.get(key):
            record[key] = f"{key}/{pair['name']}.png"
            record["semantic_classes"] = source["semantic_classes"]
    own = {k: pair[k]["crop_box_xyxy"] for k in keys if "crop_box_xyxy" in pair[k]}
    own.update({f"label{i}": lab["crop_box_xyxy"] for i, lab in enumerate(labels) if "crop_box_xyxy" in lab})
    if own:
        record["crop_box_xyxy_per_image"] = own
    if pair.get("note"):
        record["note"] = pair["note"]
    return record


def write_png_atomic(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png.tmp", delete=False) as tmp:
        img.save(tmp, format="PNG")
    os.replace(tmp.name, path)


def write_text_atomic(text: str, path: Path) -> None:
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
    ) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def build(manifest: dict, mirrors: Path, out: Path, reserved: Reserved, only: set[str] | None) -> list[dict]:
    """Write every (selected) pair; returns the records. Pairs matching a reserved image are skipped."""
    sources = manifest["sources"]
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".realpool"
    if any(out.iterdir()) and not marker.exists():
        raise ManifestError(f"{out} is not empty and was not made by build_pool.py; choose another --out")
    marker.touch()
    records, refused = [], []
    for pair in manifest["pairs"]:
        validate(pair, sources)
        if only and pair["source"] not in only:
            continue
        source = sources[pair["source"]]
        before = load_image(mirrors, pair, source, "before")
        after = load_image(mirrors, pair, source, "after")
        mask = load_mask(mirrors, pair, source)
        dist = (reserved.min_distance(before), reserved.min_distance(after))
        if reserved.pixel_match(before) or reserved.pixel_match(after) or min(dist) <= AHASH_MATCH:
            refused.append(pair["name"])
            continue
        write_png_atomic(before, out / "before" / f"{pair['name']}.png")
        write_png_atomic(after, out / "after" / f"{pair['name']}.png")
        if mask is not None:
            write_png_atomic(mask, out / "label" / f"{pair['name']}.png")
        for key in ("semantic_before", "semantic_after"):
            if pair.get(key):
                write_png_atomic(load_image(mirrors, pair, source, key), out / key / f"{pair['name']}.png")
        records.append(pair_record(pair, source, pair["source"], mask, dist))
    existing = []
    jsonl = out / "pairs.jsonl"
    if only and jsonl.exists():  # a partial rebuild keeps the other sources' rows
        existing = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
        existing = [r for r in existing if r["source"] not in only]
    rows = existing + records
    write_text_atomic("".join(json.dumps(r) + "\n" for r in rows), jsonl)
    write_text_atomic(captions_csv(rows), out / "captions.csv")
    write_text_atomic(sources_table(manifest, rows), out / "SOURCES.md")
    if refused:
        print(f"refused (held-out match): {', '.join(refused)}")
    return rows


def captions_csv(rows: list[dict]) -> str:
    """captions.csv (filename,caption) as the realdev folder layout has it; no split: folds go by source."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filename", "caption"])
    for row in rows:
        writer.writerows([f"{row['name']}.png", caption] for caption in row["captions"])
    return buffer.getvalue()


def sources_table(manifest: dict, rows: list[dict]) -> str:
    """SOURCES.md: one row per source with its pairs and change types."""
    lines = [
        "# realpool sources",
        "",
        "Rebuilt by `benchmarks/realpool/build_pool.py` from `sources.json`; see that folder's README.",
        "",
        "| source | repo @ commit | dataset | sensor | place | pairs | change types | licence |",
        "|---|---|---|---|---|---:|---|---|",
    ]
    for sid, src in manifest["sources"].items():
        mine = [r for r in rows if r["source"] == sid]
        if not mine:
            continue
        counts: dict[str, int] = {}
        for r in mine:
            for t in r["change_types"]:
                counts[t] = counts.get(t, 0) + 1
        types = ", ".join(f"{t} {n}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        commits = sorted({r["source_commit"][:8] for r in mine})
        place = src.get("place") or src.get("country") or ""
        lines.append(
            f"| {sid} | {src['repo']} @ {', '.join(commits)} | {src['dataset']} | "
            f"{src['sensor_resolution']} | {place} | {len(mine)} | {types} | {src['licence']} |"
        )
    total: dict[str, int] = {}
    for r in rows:
        for t in r["change_types"]:
            total[t] = total.get(t, 0) + 1
    lines += [
        "",
        f"{len(rows)} pairs; "
        + ", ".join(f"{t} {n}" for t, n in sorted(total.items(), key=lambda kv: -kv[1])),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mirrors", type=Path, default=Path("/work/.mirror"), help="root of the fetched mirrors"
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, default=Path("/work/realpool"))
    parser.add_argument(
        "--reserved", type=Path, default=DEFAULT_RESERVED.resolve(), help="reserved-images.json"
    )
    parser.add_argument("--only", nargs="*", help="rebuild only these source ids (other rows are kept)")
    args = parser.parse_args()
    manifest = json.loads(args.manifest.read_text())
    if not args.reserved.exists():
        raise SystemExit(
            f"{args.reserved}: reserved-images.json not found; pass --reserved (the check is not optional)"
        )
    rows = build(
        manifest, args.mirrors, args.out, Reserved.load(args.reserved), set(args.only) if args.only else None
    )
    print(f"{len(rows)} pairs in {args.out}")
    checker = args.reserved.parent.parent / "tools" / "check_reserved.py"
    if checker.exists():
        subprocess.run([sys.executable, str(checker), str(args.out)], check=True)


if __name__ == "__main__":
    main()
