"""Text-query latency at archive scale: encode a sentence + top-10, exact vs HNSW vs plain numpy.

Synthetic clustered, L2-normalised 256-d pair embeddings stand in for a real archive (search cost
depends only on N and d); the sentence goes through the real text encoder + head. Prints a markdown
table for the README with the machine and the date.

    .venv/bin/python benchmarks/search.py                          # full run: 100k and 1M pairs
    .venv/bin/python benchmarks/search.py --sizes 20000 --queries 30   # quick check while developing

Targets (issue 4): median <= 20 ms at 100k and <= 50 ms at 1M pairs on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import time

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


def clustered_unit_vectors(n: int, d: int, seed: int = 0, chunk: int = 200_000) -> np.ndarray:
    """n unit vectors around 1,000 centres (archives cluster by scene type), built chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1_000, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        x = centres[rng.integers(0, len(centres), m)] + 0.8 * rng.standard_normal((m, d)).astype(np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.median(ms)), float(np.percentile(ms, 95))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--checkpoint", type=str, default=None, help="Trained checkpoint (default: untrained)"
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import faiss
    import torch

    from textitsr.index.search import SearchConfig, VectorIndex

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.checkpoint:
        from textitsr.models.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint)
    else:
        from textitsr.models.textitsr import ModelConfig, TextITSR

        model = TextITSR(ModelConfig(fusion="gff:before+after+diff", embed_dim=args.dim))
    model.eval()

    def encode(text: str) -> np.ndarray:
        return model.encode_texts([text]).numpy().astype(np.float32)

    for s in SENTENCES:  # warm up tokenizer and kernels
        encode(s)

    rows = []
    for n in args.sizes:
        x = clustered_unit_vectors(n, args.dim)
        mem0 = rss_mb()
        t = time.perf_counter()
        indexes, builds = {}, {}
        for name, config in (
            ("exact", SearchConfig(scan_threshold=n + 1, hnsw_threshold=n + 1)),
            ("scan", SearchConfig(scan_threshold=0, hnsw_threshold=n + 1)),
            ("hnsw", SearchConfig(hnsw_threshold=0)),
        ):
            t = time.perf_counter()
            indexes[name] = VectorIndex(x, config)
            builds[name] = time.perf_counter() - t
        mems = {"exact": x.nbytes / 2**20, "scan": x.nbytes / 2**21,
                "hnsw": faiss.serialize_index(indexes["hnsw"].index).nbytes / 2**20}
        lat: dict[str, list[float]] = {"numpy": [], "exact": [], "scan": [], "hnsw": []}
        hits = []
        for i in range(args.queries):
            text = SENTENCES[i % len(SENTENCES)] + f" {i}"
            for name in lat:
                t = time.perf_counter()
                q = encode(text)
                if name == "numpy":
                    sims = x @ q[0]
                    top = np.argpartition(-sims, 10)[:10]
                    top = top[np.argsort(-sims[top])]
                else:
                    _, ids = indexes[name].search(q, 10)
                    top = ids[0]
                lat[name].append((time.perf_counter() - t) * 1000)
                hits.append((name, i, top))
        exact = {i: set(t.tolist()) for name, i, t in hits if name == "exact"}
        recall = {
            key: np.mean([len(set(t.tolist()) & exact[i]) / 10 for name, i, t in hits if name == key])
            for key in indexes
        }
        enc_ms = percentiles(
            [
                (lambda t0: (encode("a road is built"), (time.perf_counter() - t0) * 1000)[1])(
                    time.perf_counter()
                )
                for _ in range(50)
            ]
        )[0]
        labels = {"exact": "exact (IndexFlatIP)", "scan": "fp16 scan (IndexScalarQuantizer)",
                  "hnsw": "hnsw (M=32, efSearch 512)"}
        np_med = percentiles(lat["numpy"])[0]
        for key, label in labels.items():
            med, p95 = percentiles(lat[key])
            rows.append((f"{n:,}", label, med, p95, np_med / med, recall[key], builds[key], mems[key]))
        del indexes, x
        print(
            f"# done {n:,} (text encoding alone: median {enc_ms:.1f} ms; "
            f"peak RSS {max(rss_mb(), mem0):.0f} MB)",
            flush=True,
        )

    print(
        f"\nText query end to end (encode + top-10), {args.dim}-d, {args.queries} queries, "
        f"{args.threads} threads — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {dt.date.today().isoformat()}\n"
    )
    print(
        "| pairs | index | median ms | p95 ms | numpy brute force / this | recall@10 vs exact "
        "| build s | index MB |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, name, med, p95, ratio, rec, build, mem in rows:
        print(
            f"| {n} | {name} | {med:.1f} | {p95:.1f} | {ratio:.2f}x | {rec:.3f} | {build:.1f} | {mem:.0f} |"
        )


if __name__ == "__main__":
    main()
