"""`make-training-data`: one training source of real pixels, written in the LEVIR-CC layout.

Parts (each written atomically into its own folder, kept when its recipe is unchanged, so an
interrupted run resumes at the first unfinished part):

    synth       changes fabricated on real single-date tiles (realsynth), captions from the change
    realpairs   real change-detection pairs (LEVIR-CD, IdaBD), captions from their masks, augmented copies
    timeseries  real NAIP (water) and Landsat (vegetation) date pairs, captions from spectral change
    world       the procedural demo world with photometric and geometric augmentation

Output layout (read by `LevirCCSource` and so by `textitsr train --source levircc`)::

    OUT/LevirCCcaptions.json            official schema + per image: change_type, part, origin
    OUT/images/PART/{train,val}/{A,B}/NAME.png
    OUT/images/PART/part.json           that part's recipe fingerprint and records
    OUT/manifest.json                   recipe, seed, counts per part and type, input/output fingerprints

Every pair gets independent sensor-like jitter on both dates (`augment.jitter`), changed or not.
Everything is a pure function of (recipe, seed, input files): same inputs, same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from textitsr.atomic import atomic_dir, atomic_write_text
from textitsr.data.levircc import CAPTIONS_FILE
from textitsr.errors import InputError
from textitsr.outputs import check_training_data_out
from textitsr.synth.augment import geometric, jitter
from textitsr.synth.caption_bank import CaptionBank, place_of

FORMAT = "textitsr-training-data"
VERSION = 1
PARTS = ("synth", "realpairs", "timeseries", "world")
MANIFEST = "manifest.json"
PART_FILE = "part.json"

#: Fabricated pairs per change type (half of "buildings_built" are pasted real buildings).
SYNTH_TARGETS: dict[str, int] = {
    "buildings_built": 300,
    "buildings_demolished": 240,
    "vegetation_cleared_for_buildings": 120,
    "road_built": 200,
    "vegetation_cleared": 200,
    "vegetation_grown": 140,
    "water_expanded": 200,
    "water_receded": 140,
    "none": 300,
}


@dataclass(frozen=True)
class TrainingDataRecipe:
    """Everything the generated data depends on besides the input files (stored in the manifest)."""

    seed: int = 0
    synth_targets: dict[str, int] = field(default_factory=lambda: dict(SYNTH_TARGETS))
    #: Augmented copies of each real change-detection pair (the first is unaugmented geometry).
    real_pair_copies: int = 4
    world_train: int = 600
    world_val: int = 100
    #: Share of source tiles/pairs whose outputs go to the "val" split.
    val_fraction: float = 0.1
    #: 0..1 scale of every sensor-like jitter draw.
    jitter_strength: float = 1.0

    def fingerprint(self, part: str) -> str:
        data = {"format": FORMAT, "version": VERSION, "part": part, **asdict(self)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Generated:
    """One generated pair before writing."""

    name: str
    split: str
    before: np.ndarray
    after: np.ndarray
    captions: list[str]
    change_type: str
    origin: str


def _rng(seed: int, part: str, *keys: int | str) -> np.random.Generator:
    """A generator that depends only on (seed, part, keys), never on how many draws came before."""
    words = [seed, *(int(hashlib.sha256(str(k).encode()).hexdigest()[:8], 16) for k in (part, *keys))]
    return np.random.default_rng(np.random.SeedSequence(words))


def _split_of(key: str, recipe: TrainingDataRecipe) -> str:
    """'val' for a fixed share of source keys (so no source tile feeds both splits)."""
    bucket = int(hashlib.sha256(f"{recipe.seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < recipe.val_fraction else "train"


def _jittered(
    before: np.ndarray, after: np.ndarray, rng: np.random.Generator, strength: float, shift: bool
) -> tuple[np.ndarray, np.ndarray]:
    return jitter(before, rng, strength * rng.uniform(0.3, 1.0)), jitter(
        after, rng, strength * rng.uniform(0.3, 1.0), shift=shift and rng.random() < 0.5
    )


# ------------------------------------------------------------------------------------- parts
def synth_part(shared: Path, recipe: TrainingDataRecipe, bank: CaptionBank) -> Iterator[Generated]:
    """Fabricated changes on realtrain tiles; false-colour tiles are left out (realdev is RGB)."""
    from textitsr.synth.realsynth import OPERATIONS, paste_buildings, read_tiles
    from textitsr.synth.storm_roads import MORE_OPERATIONS

    operations = {**OPERATIONS, **MORE_OPERATIONS}

    tiles = [t for t in read_tiles(shared / "realtrain") if not t.false_colour]
    donors = [t for t in tiles if t.layer("building").sum() > 200]
    for kind, target in recipe.synth_targets.items():
        made = 0
        for attempt in range(6 * target):
            if made >= target:
                break
            rng = _rng(recipe.seed, "synth", kind, attempt)
            tile = tiles[int(rng.integers(len(tiles)))]
            tile = tile.transformed(geometric(rng, tile.image.shape[0], zoom=(1.0, 1.4)))
            if kind == "buildings_built" and attempt % 2 == 1 and donors:
                change = paste_buildings(tile, donors[int(rng.integers(len(donors)))], rng)
            else:
                change = operations[kind](tile, rng)
            if change is None:
                continue
            before, after = _jittered(
                change.before, change.after, rng, recipe.jitter_strength, kind == "none"
            )
            captions = bank.draw(change.change_type, change.count, place_of(change.mask), rng)
            yield Generated(
                f"{kind}_{attempt:05d}",
                _split_of(tile.name, recipe),
                before,
                after,
                captions,
                change.change_type,
                tile.name,
            )
            made += 1


def realpairs_part(shared: Path, recipe: TrainingDataRecipe, bank: CaptionBank) -> Iterator[Generated]:
    """Real change-detection pairs, each as `real_pair_copies` augmented copies."""
    from textitsr.synth.realpairs import captions_for, change_detection_pairs

    for item in change_detection_pairs(shared / "realtrain", shared / "levircd-samples"):
        split = _split_of(item.name, recipe)
        for copy in range(recipe.real_pair_copies):
            rng = _rng(recipe.seed, "realpairs", item.name, copy)
            before, after, place = item.before, item.after, item.place
            if copy:
                warp = geometric(rng, before.shape[0], zoom=(1.0, 1.25))
                before, after = warp(before), warp(after)
                if item.mask is not None:
                    place = place_of(warp(item.mask))
                before, after = _jittered(
                    before, after, rng, recipe.jitter_strength, item.change_type == "none"
                )
            labelled = type(item)(**{**item.__dict__, "place": place})
            yield Generated(
                f"{item.name}_c{copy}",
                split,
                before,
                after,
                captions_for(labelled, bank, rng),
                item.change_type,
                item.name,
            )


def timeseries_part(shared: Path, recipe: TrainingDataRecipe, bank: CaptionBank) -> Iterator[Generated]:
    """NAIP date pairs captioned by water change, Landsat (Pucallpa) by vegetation change."""
    from textitsr.synth.realpairs import captions_for, time_series_pairs

    series = [
        (shared / "geo" / "naip", ("water_expanded", "water_receded"), False, {}),
        (
            shared / "geo" / "landsat",
            ("vegetation_cleared", "vegetation_grown"),
            True,
            {"band_names": ("swir1", "nir", "red", "green"), "display": "false-colour", "tile_size": 128},
        ),
    ]
    for root, kinds, describe, options in series:
        for item in time_series_pairs(root, kinds, describe=describe, **options):
            rng = _rng(recipe.seed, "timeseries", item.name)
            tile_key = item.name.rsplit("_r", 1)[-1]  # the same tile at other dates stays in its split
            yield Generated(
                item.name,
                _split_of(f"{root.name}{tile_key}", recipe),
                item.before,
                item.after,
                captions_for(item, bank, rng),
                item.change_type,
                item.name,
            )


def world_part(
    shared: Path, recipe: TrainingDataRecipe, bank: CaptionBank, cache: Path
) -> Iterator[Generated]:
    """The procedural world (its own captions), with colour/blur/scale jitter; rotated or flipped
    only when no caption names a place (a rotation would make "top left" wrong)."""
    from textitsr.data.world import SyntheticSource
    from textitsr.synth.caption_bank import caption_place_ok
    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    world = cache / "world"
    config = SyntheticWorldConfig(
        n_train=recipe.world_train, n_val=recipe.world_val, n_test=0, export_levircc=False
    )
    try:
        source = SyntheticSource(world)
        if len(source) != recipe.world_train + recipe.world_val:
            raise InputError("stale world")
    except InputError:
        write_demo_world(world, seed=recipe.seed + 7, config=config)
        source = SyntheticSource(world)
    for pair in source.pairs():
        rng = _rng(recipe.seed, "world", pair.pair_id)
        before, after = pair.rgb("before"), pair.rgb("after")
        if all(caption_place_ok(c, None) for c in pair.captions):
            warp = geometric(rng, before.shape[0], zoom=(1.0, 1.2))
            before, after = warp(before), warp(after)
        before, after = _jittered(before, after, rng, recipe.jitter_strength, pair.change_type == "none")
        yield Generated(
            pair.pair_id,
            pair.split or "train",
            before,
            after,
            list(pair.captions),
            pair.change_type or "none",
            pair.pair_id,
        )


# ------------------------------------------------------------------------------------ writing
def numpy_simd_level() -> str:
    """The widest x86 SIMD level numpy dispatches to on this machine. The procedural world's
    pixels differ in the last bit between levels (X86_V2 and X86_V3 give different PNGs on one
    machine), so generated data is byte-identical only where this level is the same."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # a numpy without the runtime feature table
        return "unknown"
    return next((level for level in ("X86_V4", "X86_V3", "X86_V2") if features.get(level)), "baseline")


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_part(
    folder: Path, part: str, items: Iterator[Generated], fingerprint: str, echo: Callable[[str], None] = print
) -> list[dict]:
    """Write one part's images and records atomically; returns its LEVIR-CC records."""
    records = []
    digest = hashlib.sha256()
    with atomic_dir(folder) as tmp:
        for item in items:
            if item.before.shape != item.after.shape:
                raise InputError(
                    f"{part}/{item.name}: before {item.before.shape} vs after {item.after.shape}"
                )
            for side, image in (("A", item.before), ("B", item.after)):
                data = _png_bytes(image)
                digest.update(data)
                path = tmp / item.split / side / f"{item.name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            records.append(
                {
                    "filename": f"{item.name}.png",
                    "filepath": f"{part}/{item.split}",
                    "split": item.split,
                    "changeflag": int(item.change_type != "none"),
                    "sentences": [{"raw": c, "tokens": c.split()} for c in item.captions],
                    "change_type": item.change_type,
                    "part": part,
                    "origin": item.origin,
                }
            )
            if len(records) % 250 == 0:
                echo(f"[training-data] {part}: {len(records)} pairs")
        digest.update(json.dumps(records, sort_keys=True).encode())
        doc = {
            "fingerprint": fingerprint,
            "content_sha256": digest.hexdigest(),
            "numpy_simd": numpy_simd_level(),
            "records": records,
        }
        (tmp / PART_FILE).write_text(json.dumps(doc) + "\n", encoding="utf-8")
    return records


def _read_part(folder: Path, fingerprint: str) -> dict | None:
    try:
        doc = json.loads((folder / PART_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return doc if doc.get("fingerprint") == fingerprint else None


def input_fingerprint(shared: Path, parts: tuple[str, ...] = PARTS) -> str:
    """sha256 of the bytes of every input file the parts read (names relative to `shared`)."""
    roots = {
        "synth": ["realtrain/images", "realtrain/masks", "realtrain/tiles.jsonl"],
        "realpairs": ["realtrain/pairs", "levircd-samples"],
        "timeseries": ["geo/naip", "geo/landsat"],
        "world": [],
    }
    digest = hashlib.sha256()
    for rel in ["levircc-captions.json", *(r for p in parts for r in roots[p])]:
        path = shared / rel
        if rel == "levircd-samples" and not path.exists():  # optional extra pairs
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if not f.is_file():
                raise InputError(f"{f}: input not found; expected the shared data folder layout")
            digest.update(str(f.relative_to(shared)).encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()[:16]


def make_training_data(
    shared: Path,
    out: Path,
    recipe: TrainingDataRecipe | None = None,
    parts: tuple[str, ...] = PARTS,
    echo: Callable[[str], None] = print,
) -> dict:
    """Generate (or resume) the training data in `out`; returns the manifest."""
    recipe = recipe or TrainingDataRecipe()
    shared, out = Path(shared), Path(out)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise InputError(f"parts {unknown}: expected some of {PARTS}")
    if not (shared / "levircc-captions.json").is_file():
        raise InputError(
            f"{shared}: no levircc-captions.json; expected the shared data folder (../shared/data)"
        )
    check_training_data_out(out, shared)
    echo(f"[training-data] tagging LEVIR-CC captions of {shared / 'levircc-captions.json'}")
    bank = CaptionBank.from_levircc(shared / "levircc-captions.json")
    makers: dict[str, Callable[[], Iterator[Generated]]] = {
        "synth": lambda: synth_part(shared, recipe, bank),
        "realpairs": lambda: realpairs_part(shared, recipe, bank),
        "timeseries": lambda: timeseries_part(shared, recipe, bank),
        "world": lambda: world_part(shared, recipe, bank, out / "cache"),
    }
    records: list[dict] = []
    content = {}
    simd = set()
    for part in parts:
        folder = out / "images" / part
        fingerprint = recipe.fingerprint(part)
        doc = _read_part(folder, fingerprint)
        if doc is None:
            echo(f"[training-data] {part}: generating")
            write_part(folder, part, makers[part](), fingerprint, echo)
            doc = _read_part(folder, fingerprint)
            if doc is None:
                raise InputError(f"{folder}: part written but unreadable")
        echo(f"[training-data] {part}: {len(doc['records'])} pairs")
        records += doc["records"]
        content[part] = doc["content_sha256"]
        simd.add(doc.get("numpy_simd", "unrecorded"))
    atomic_write_text(out / CAPTIONS_FILE, json.dumps({"images": records}) + "\n")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "recipe": asdict(recipe),
        "parts": list(parts),
        "inputs_sha256": input_fingerprint(shared, parts),
        "content_sha256": hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16],
        "numpy_simd": ",".join(sorted(simd)),
        "pairs": len(records),
        "per_split": dict(Counter(r["split"] for r in records)),
        "per_type": dict(sorted(Counter(r["change_type"] for r in records).items())),
        "per_part": {p: sum(r["part"] == p for r in records) for p in parts},
        "caption_bank": bank.counts(),
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest
