"""Store build throughput (pairs/s) of the real build path: `build_store` with the default model.

Builds a store from one split of a synthetic world (the demo's by default) once per setting, each in
its own process, and times the whole build after the model is loaded (reading, thumbnails,
statistics, pair and caption embedding, shard writes). `--baseline PATH` adds a row for the code
in PATH (e.g. an export of an older commit) built the same way; every row's pair embeddings are
compared with the first row's (mean / min cosine).

    .venv/bin/python benchmarks/build_speed.py --world data/demo/world --split val
    .venv/bin/python benchmarks/build_speed.py --baseline /tmp/textitsr-before
    .venv/bin/python benchmarks/build_speed.py --series ../shared/data/geo/naip --pairing all

`--series` builds a GeoTIFF time series instead (each (tile, date) image then sits in several
pairs), with and without the build's image feature cache.

Target (issue 12): >= 60 pairs/s on 2 cores with mean cosine >= 0.99 to fp32.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

#: name -> (BuildConfig overrides, compile the backbone?)
SETTINGS = {
    "default (auto precision, auto backbone runtime = ONNX Runtime, read-ahead thread)": ({}, True),
    "TorchScript backbone": ({"backbone_runtime": "torchscript"}, True),
    "no read-ahead thread": ({"prefetch": False}, True),
    "eager backbone (no compiled graph)": ({"backbone_runtime": "eager"}, False),
}
#: Settings for a GeoTIFF series (`--series`).
SERIES_SETTINGS = {
    "default: each (tile, date) image read once and embedded once": ({}, True),
    "tile reads kept, no image feature cache": ({"image_cache_bytes": 0}, True),
    "neither (before: each pair's two images read and embedded)": (
        {"image_cache_bytes": 0, "tile_cache_bytes": 0}, True),
}


def one(
    world: str, split: str | None, out: str, overrides: dict, trace: bool, pairing: str | None = None
) -> dict:
    """Build in this process (`world`: a synthetic world, or with `pairing` a GeoTIFF series);
    returns pairs/s and the precision used."""
    import torch

    import textitsr.index.build as build
    from textitsr.data.synthetic import SyntheticSource
    from textitsr.embedding.encode import load_model
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    if not trace:  # also for code from before `backbone_runtime` (--baseline)
        for name in ("trace_image_backbone", "compile_image_backbone"):
            setattr(build, name, lambda model, *args: False)
    fields = getattr(build.BuildConfig, "__dataclass_fields__", {})
    config = build.BuildConfig(**{k: v for k, v in overrides.items() if k in fields})
    checkpoint = Path(DEFAULT_MODEL_DIR).resolve()
    model = load_model(checkpoint)
    if pairing is not None:
        import textitsr.data.geotiff as geotiff
        from textitsr.data.geotiff import GeoTiffSource

        if "tile_cache_bytes" in overrides:
            geotiff.TILE_CACHE_BYTES = overrides["tile_cache_bytes"]
        source = GeoTiffSource(Path(world), pairing=pairing)
    else:
        source = SyntheticSource(Path(world))
    resolve = getattr(build, "resolve_precision", None)
    used = resolve(model, source, split, config).precision if resolve else "fp32"
    t0 = time.perf_counter()
    store = build.build_store(checkpoint, source, Path(out), split=split, config=config, progress=False)
    seconds = time.perf_counter() - t0
    return {
        "pairs": len(store),
        "captions": int(store.manifest["n_captions"]),
        "pairs_per_s": len(store) / seconds,
        "precision": used,
        "threads": torch.get_num_threads(),
        "backbone_images_per_s": _backbone_speed(model),
        "prepare_ms_per_pair": _prepare_ms(build, source, split, config),
    }


def _backbone_speed(model, n: int = 32, reps: int = 3) -> float:
    """Images/s of the image backbone as the build ran it (compiled graph if any, else eager)."""
    import torch

    enc = model.image_encoder
    pixels = enc.preprocess(np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), np.uint8))
    run = getattr(model, "fast_image_encoder", None) or enc
    with torch.inference_mode():
        run(pixels)
        t = time.perf_counter()
        for _ in range(reps):
            run(pixels)
    return n * reps / (time.perf_counter() - t)


def _prepare_ms(build, source, split: str, config) -> float:
    """Milliseconds a pair spends outside the model: decoding, PNG thumbnails, change statistics."""
    read = getattr(build, "_read_batch", None)
    if read is None:
        return float("nan")
    pairs = list(source.pairs(split))
    t = time.perf_counter()
    for i in range(0, len(pairs), config.batch_size):
        read(pairs[i : i + config.batch_size], config.thumb_size)
    return (time.perf_counter() - t) * 1000 / max(len(pairs), 1)


def run(spec: dict, code: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    proc = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(spec)], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"setting {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=str(REPO / "data" / "demo" / "world"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--baseline", type=Path, help="folder holding an older `textitsr` package to compare")
    ap.add_argument("--series", help="a folder of GeoTIFF scenes of one place (instead of --world)")
    ap.add_argument("--pairing", default="consecutive", help="--series: consecutive or all")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        spec = json.loads(args.one)
        print(json.dumps(one(**spec)))
        return
    work = Path(tempfile.mkdtemp(prefix="textitsr-build-bench-"))
    rows = []
    try:
        runs = [("baseline: " + str(args.baseline), {}, True, args.baseline)] if args.baseline else []
        settings = SERIES_SETTINGS if args.series else SETTINGS
        runs += [(name, o, t, REPO) for name, (o, t) in settings.items()]
        for i, (name, overrides, trace, code) in enumerate(runs):
            out = work / f"store-{i}"
            spec = {"world": args.world, "split": args.split, "out": str(out), "overrides": overrides,
                    "trace": trace}
            if args.series:
                spec.update(world=str(Path(args.series).resolve()), split=None, pairing=args.pairing)
            result = run(spec, code)
            emb = _embeddings(out)
            rows.append((name, result, emb))
            print(f"{name}: {result['pairs_per_s']:.1f} pairs/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    what = f"{args.series}, pairing {args.pairing}" if args.series else f"{args.split} split of {args.world}"
    print(
        f"# Store build, default model (EfficientNet-Lite0 + MiniLM-L6), {rows[0][1]['pairs']} pairs / "
        f"{rows[0][1]['captions']} captions ({what}) — {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the end, {dt.date.today()}\n"
    )
    print("| setting | precision | pairs/s | backbone images/s | outside the model ms/pair "
          "| cosine to first row (mean / min) |")
    print("|---|---|---:|---:|---:|---|")
    ref = rows[0][2]
    for name, r, emb in rows:
        cos = (emb * ref).sum(axis=1)
        speed = r.get("backbone_images_per_s", float("nan"))
        print(f"| {name} | {r['precision']} | {r['pairs_per_s']:.1f} | {speed:.1f} "
              f"| {r.get('prepare_ms_per_pair', float('nan')):.1f} | {cos.mean():.4f} / {cos.min():.4f} |")


def _embeddings(store: Path) -> np.ndarray:
    parts = sorted((store / "shards").glob("*/pair_embeddings.npy"))
    emb = np.concatenate([np.load(p).astype(np.float32) for p in parts])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


if __name__ == "__main__":
    main()
