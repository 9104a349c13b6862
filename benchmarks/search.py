"""Text-query latency and recall at archive scale: encode a sentence + top-10, for each search tier.

A simulated archive stands in for a real one (search cost depends only on N and d): float16,
L2-normalised 256-d pair embeddings around 1,000 centres (archives cluster by scene type), written
to a memory-mapped .npy file as a store shard keeps them. Queries are text-like: mixtures of a few
centres plus noise, on the far side of a modality gap (a shared offset that pair embeddings have and
text embeddings lack), so their best matches score ~0.3 as in trained cross-modal models rather
than ~0.9 as pair->pair queries would. Each timed query also runs the real text encoder + head
(untrained weights) on a sentence, so the times are end to end.

Both wall time and the process's CPU time are reported: on a shared machine the wall time includes
waiting for the cores, while the CPU time of this single-threaded work is what the query costs.

    .venv/bin/python benchmarks/search.py                                  # 100k and 1M pairs
    .venv/bin/python benchmarks/search.py --sizes 10000000 --tiers codes ivf --queries 100   # 10M
    .venv/bin/python benchmarks/search.py --sizes 20000 --queries 20       # quick check

Archives, exact answers and the codes/IVF/HNSW indexes are cached in `--workdir` (kept with
`--keep`); `--prepare-only` makes them (slow: run it niced) so the timed run only loads them.

Targets: 1M pairs median <= 20 ms at recall@10 = 1.0; 10M pairs median <= 60 ms at
recall@10 >= 0.95 with resident memory <= 6 GB (2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "new buildings along the road",
    "a road is built across the bare land",
    "the pond dries up",
    "trees are cut down in the upper left",
    "several houses are demolished",
    "nothing has changed",
    "a new residential area appears on the farmland",
    "the lake becomes larger",
]
TIER_LABELS = {
    "exact": "exact `IndexFlatIP` (float32 in memory)",
    "scan": "fp16 scan (`IndexScalarQuantizer`)",
    "codes": "PQ fast scan (4 dims a code) + exact re-score of 4,000 in FAISS (fp16 in memory up to 1 GiB; "
             "else 2 dims a code, re-rank of 1,000 memory-mapped)",
    "ivf": "IVF + PQ fast scan + exact re-rank of 1,000 (fp16 in memory up to 1 GiB, else memory-mapped)",
    "hnsw": "HNSW M=32, efSearch 512",
}


def simulated_archive(path: Path, n: int, d: int, seed: int = 0, chunk: int = 250_000) -> np.ndarray:
    """n float16 unit vectors in a memory-mapped .npy file (written chunk by chunk, reused if there)."""
    if path.is_file():
        x = np.load(path, mmap_mode="r")
        if x.shape == (n, d):
            return x
    rng = np.random.default_rng(seed)
    centres, gap = _centres(d, seed)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, d))
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        v = centres[rng.integers(0, len(centres), m)] + 0.8 * rng.standard_normal((m, d), np.float32) + gap
        out[i : i + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    out.flush()
    del out
    tmp.replace(path)
    return np.load(path, mmap_mode="r")


def _centres(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return rng.standard_normal((1_000, d)).astype(np.float32), 0.5 * rng.standard_normal(d).astype(np.float32)


def text_like_queries(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Mixtures of 1-3 centres plus noise, across the modality gap from the archive."""
    rng = np.random.default_rng(seed + 2)
    centres, gap = _centres(d, seed)
    weights = rng.dirichlet(np.ones(3), n).astype(np.float32)
    q = (weights[:, :, None] * centres[rng.integers(0, len(centres), (n, 3))]).sum(1)
    q += rng.standard_normal((n, d), np.float32) - gap
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top10(x: np.ndarray, q: np.ndarray, chunk: int = 250_000) -> np.ndarray:
    """Exact top-10 rows per query by brute force (FAISS k-NN a chunk at a time, then merged)."""
    import faiss

    scores, ids = [], []
    for i in range(0, len(x), chunk):
        s, j = faiss.knn(q, np.ascontiguousarray(x[i : i + chunk], dtype=np.float32), 10,
                         metric=faiss.METRIC_INNER_PRODUCT)
        scores.append(s)
        ids.append(j + i)
    s, j = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    top = np.argsort(-s, axis=1, kind="stable")[:, :10]
    return np.take_along_axis(j, top, axis=1)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--tiers", nargs="+", default=["exact", "scan", "codes", "ivf"], choices=list(TIER_LABELS)
    )
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--text-backend", default="auto", choices=["auto", "torch", "onnx"],
                        help="What the sentence encoder runs on (as `SearchService`: auto = ONNX Runtime "
                             "when its probe matches PyTorch).")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--scan-parts", type=int, default=None,
                        help="Slices the flat PQ codes tier scans on threads (default: SearchConfig's).")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textitsr-search-bench")
    parser.add_argument("--keep", action="store_true", help="Keep the simulated archives for a rerun.")
    parser.add_argument("--prepare-only", action="store_true",
                        help="Write the archives, exact answers and indexes, time nothing (implies --keep).")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from textitsr.index.search import SearchConfig, VectorIndex
    from textitsr.models.onnx_text import use_text_backend
    from textitsr.models.textitsr import ModelConfig, TextITSR

    args.scan_parts = args.scan_parts or SearchConfig.scan_parts
    torch.set_num_threads(1)  # the sentence on one thread (the codes tier scans on `scan_parts`)
    model = TextITSR(ModelConfig(fusion="gff:before+after+diff", embed_dim=args.dim)).eval()
    backend = use_text_backend(model.text_encoder, args.text_backend, threads=1)
    for s in SENTENCES:
        model.encode_texts([s])
    args.workdir.mkdir(parents=True, exist_ok=True)
    configs = {
        "exact": lambda n: SearchConfig(scan_threshold=n + 1, codes_threshold=n + 1, ivf_threshold=n + 1),
        "scan": lambda n: SearchConfig(scan_threshold=0, codes_threshold=n + 1, ivf_threshold=n + 1),
        "codes": lambda n: SearchConfig(codes_threshold=0, ivf_threshold=n + 1, scan_parts=args.scan_parts),
        "ivf": lambda n: SearchConfig(ivf_threshold=0),
        "hnsw": lambda n: SearchConfig(hnsw_threshold=0),
    }
    rows = []
    for n in args.sizes:
        path = args.workdir / f"archive-{n}x{args.dim}.npy"
        x = simulated_archive(path, n, args.dim)
        q = text_like_queries(args.queries, args.dim)
        truth_path = args.workdir / f"truth-{n}x{args.dim}-{args.queries}.npy"
        if truth_path.is_file():
            truth = np.load(truth_path)
        else:
            truth = exact_top10(x, q)
            np.save(truth_path, truth)
        top1 = float(np.median(np.einsum("qd,qd->q", q, np.asarray(x[truth[:, 0]], np.float32))))
        print(f"# {n:,} pairs ready (median best text-query score {top1:.2f})", flush=True)
        del x  # each tier maps the file afresh, so RSS shows what that tier keeps resident
        for tier in args.tiers:
            t = time.perf_counter()
            cache = args.workdir / f"index-{tier}-{n}x{args.dim}.faiss"
            index = VectorIndex(np.load(path, mmap_mode="r"), configs[tier](n), cache=cache)
            build = time.perf_counter() - t
            if args.prepare_only:
                print(f"# {n:,} {tier}: index ready in {build:.0f} s", flush=True)
                continue
            if isinstance(index.vectors, np.memmap):  # drop the pages the build read
                index.vectors = np.load(path, mmap_mode="r")
            wall, cpu, search_cpu, hits = [], [], [], []
            for i in range(args.queries):
                sentence = SENTENCES[i % len(SENTENCES)]
                t, c = time.perf_counter(), time.process_time()
                model.encode_texts([sentence])
                c1 = time.process_time()
                _, ids = index.search(q[i : i + 1], 10)
                wall.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                search_cpu.append((time.process_time() - c1) * 1000)
                hits.append(ids[0])
            recall = np.mean([len(set(h) & set(e)) / 10 for h, e in zip(hits, truth, strict=True)])
            rows.append((n, tier, np.median(wall), np.median(cpu), np.percentile(cpu, 95),
                         np.median(search_cpu), recall, build, rss_mb(), os.getloadavg()[0]))
            print(f"# {n:,} {tier}: cpu {np.median(cpu):.1f} ms (search {np.median(search_cpu):.1f}), "
                  f"recall {recall:.3f}, rss {rss_mb():.0f} MB", flush=True)
            del index
        if not (args.keep or args.prepare_only):
            path.unlink()
    if args.prepare_only:
        return

    print(
        f"\nText query end to end (encode + top-10), {args.dim}-d, {args.queries} text-like queries, "
        f"1 thread (the codes tier's scan: {args.scan_parts}), text encoder on {backend.backend} — "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {dt.date.today().isoformat()}, peak RSS {peak_rss_mb():,.0f} MB\n"
    )
    print("| pairs | tier | median CPU ms | p95 CPU ms | of which search | median wall ms "
          "| recall@10 vs exact | build or load s | RSS MB | load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, tier, wall, cpu, cpu95, search, rec, build, rss, load in rows:
        print(f"| {n:,} | {TIER_LABELS[tier]} | {cpu:.1f} | {cpu95:.1f} | {search:.1f} | {wall:.1f} "
              f"| {rec:.3f} | {build:.0f} | {rss:,.0f} | {load:.0f} |")


if __name__ == "__main__":
    main()
