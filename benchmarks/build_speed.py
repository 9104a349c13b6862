"""Store build throughput (pairs/s) of the real build path: `build_store` with the default model.

Builds a store from one split of a synthetic world (the demo's by default) once per setting, each in
its own process, and times the whole build after the model is loaded (reading, thumbnails,
statistics, pair and caption embedding, shard writes). `--baseline PATH` adds a row for the code
in PATH (e.g. an export of an older commit) built the same way; every row's pair embeddings are
compared with the first row's (mean / min cosine).

    .venv/bin/python benchmarks/build_speed.py --world data/demo/world --split val
    .venv/bin/python benchmarks/build_speed.py --baseline /tmp/textitsr-before
    python benchmarks/build_speed.py --source folder --world PAIRS --device cuda --precision fp32 auto
    taskset -c 0,1 python benchmarks/build_speed.py --threads 2 --precision fp32 auto

`--precision` replaces the backbone-runtime rows with one row per precision (the first is the
reference of the cosine column, so give fp32 first); `--device cuda` builds on the GPU.

    python benchmarks/build_speed.py --source geotiff --world ../shared/data/geo/naip --pairing all

A GeoTIFF series (each (tile, date) image then sits in several pairs) gets rows with and without
the build's tile-read and image-feature caches instead.

Targets: >= 25 pairs/s on 2 CPU cores and >= 1,000 pairs/s on one H100/H200, mean cosine >= 0.99 to fp32.
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
#: Settings for a GeoTIFF series (`--source geotiff`).
SERIES_SETTINGS = {
    "default: each (tile, date) image read once and embedded once": ({}, True),
    "tile reads kept, no image feature cache": ({"image_cache_bytes": 0}, True),
    "neither (before: each pair's two images read and embedded)": (
        {"image_cache_bytes": 0, "tile_cache_bytes": 0}, True),
}


def one(world: str, split: str | None, out: str, overrides: dict, trace: bool, source: str = "synthetic",
        threads: int | None = None, pairing: str | None = None) -> dict:
    """Build in this process; returns pairs/s and the precision used."""
    import torch

    import textitsr.index.build as build
    from textitsr.data.registry import open_source
    from textitsr.embedding.encode import load_model
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    if threads:
        torch.set_num_threads(threads)

    if not trace:  # also for code from before `backbone_runtime` (--baseline)
        for name in ("trace_image_backbone", "compile_image_backbone"):
            setattr(build, name, lambda model, *args: False)
    fields = getattr(build.BuildConfig, "__dataclass_fields__", {})
    config = build.BuildConfig(**{k: v for k, v in overrides.items() if k in fields})
    checkpoint = Path(DEFAULT_MODEL_DIR).resolve()
    model = load_model(checkpoint, config.device)
    if source == "geotiff":
        import textitsr.data.geotiff as geotiff

        geotiff.TILE_CACHE_BYTES = overrides.get("tile_cache_bytes", geotiff.TILE_CACHE_BYTES)
        pairs = open_source(Path(world), source, pairing=pairing or "consecutive")
    else:
        pairs = open_source(Path(world), source)
    resolve = getattr(build, "resolve_precision", None)
    used = resolve(model, pairs, split, config).precision if resolve else "fp32"
    t0 = time.perf_counter()
    store = build.build_store(checkpoint, pairs, Path(out), split=split, config=config, progress=False)
    _synchronize(config.device)
    seconds = time.perf_counter() - t0
    return {
        "pairs": len(store),
        "captions": int(store.manifest["n_captions"]),
        "pairs_per_s": len(store) / seconds,
        "precision": used,
        "threads": torch.get_num_threads(),
        "backbone_images_per_s": _backbone_speed(model, used),
        "prepare_ms_per_pair": _prepare_ms(build, pairs, split, config),
        "device": _device_name(config.device),
    }


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({_cpu_model()})"


def _cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text(errors="replace").splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _backbone_speed(model, precision: str = "fp32", n: int = 32, reps: int = 3) -> float:
    """Images/s of the image backbone as the build ran it (compiled graph if any, else eager; bf16
    autocast when the build used it)."""
    import torch

    enc = model.image_encoder
    pixels = enc.preprocess(np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), np.uint8))
    fast = getattr(model, "fast_image_encoder", None)
    run = fast if fast is not None and precision == "fp32" else enc
    bf16 = torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), bf16:
        run(pixels)
        _synchronize(pixels.device.type)
        t = time.perf_counter()
        for _ in range(reps):
            run(pixels)
        _synchronize(pixels.device.type)
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
    paths = [str(code), os.environ.get("PYTHONPATH", "")]  # the code first; keep the caller's paths
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
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
    ap.add_argument("--source", default="synthetic", help="source kind of --world (synthetic, folder, ...)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", nargs="+", help="one row per precision (fp32, bf16, auto) instead of "
                    "the backbone-runtime rows; the first is the cosine reference")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    ap.add_argument("--json", type=Path, help="also write the rows here as JSON")
    ap.add_argument("--baseline", type=Path, help="folder holding an older `textitsr` package to compare")
    ap.add_argument("--pairing", default="consecutive", help="--source geotiff: consecutive or all")
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
        if args.precision:
            settings = {f"{args.device}, precision {p}": ({"precision": p}, True) for p in args.precision}
        else:
            settings = SERIES_SETTINGS if args.source == "geotiff" else SETTINGS
        runs += [(name, o, t, REPO) for name, (o, t) in settings.items()]
        for i, (name, overrides, trace, code) in enumerate(runs):
            out = work / f"store-{i}"
            overrides = {**overrides, "device": args.device} if args.device != "cpu" else overrides
            spec = {"world": args.world, "split": args.split, "out": str(out), "overrides": overrides,
                    "trace": trace, "source": args.source, "threads": args.threads}
            if args.source == "geotiff":  # a series has no splits
                spec.update(split=None, pairing=args.pairing)
            result = run(spec, code)
            emb = _embeddings(out)
            rows.append((name, result, emb))
            print(f"{name}: {result['pairs_per_s']:.1f} pairs/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    series = args.source == "geotiff"
    what = f"{args.world}, pairing {args.pairing}" if series else f"{args.split} split of {args.world}"
    print(
        f"# Store build, default model (EfficientNet-Lite0 + MiniLM-L6), {rows[0][1]['pairs']} pairs / "
        f"{rows[0][1]['captions']} captions ({what}) — "
        f"{rows[0][1].get('device', platform.machine())}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} "
        f"CPUs, torch threads {rows[0][1]['threads']}, load average {load[0]:.1f} at the end, "
        f"{dt.date.today()}\n"
    )
    print("| setting | precision | pairs/s | backbone images/s | outside the model ms/pair "
          "| cosine to first row (mean / min) |")
    print("|---|---|---:|---:|---:|---|")
    ref = rows[0][2]
    table = []
    for name, r, emb in rows:
        cos = (emb * ref).sum(axis=1)
        speed = r.get("backbone_images_per_s", float("nan"))
        print(f"| {name} | {r['precision']} | {r['pairs_per_s']:.1f} | {speed:.1f} "
              f"| {r.get('prepare_ms_per_pair', float('nan')):.1f} | {cos.mean():.4f} / {cos.min():.4f} |")
        table.append({"setting": name, **r, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())})
    if args.json:
        args.json.write_text(json.dumps({"load_average": load[0], "rows": table}, indent=1))


def _embeddings(store: Path) -> np.ndarray:
    parts = sorted((store / "shards").glob("*/pair_embeddings.npy"))
    emb = np.concatenate([np.load(p).astype(np.float32) for p in parts])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


if __name__ == "__main__":
    main()
