"""`textitsr search` from a cold process: loading the text side on PyTorch, running the store's
exported query graph (ONNX Runtime + tokenizers, no torch or transformers), and asking a running API.

Runs the real command `--runs` times each way over a store (the demo's when built, else a small
synthetic one) and prints wall and CPU seconds (user + system of the child process): on a shared
machine the wall time includes waiting for the cores, the CPU time is what the command costs. The
PyTorch rows pass `--checkpoint` (which always loads the model); one untimed search without it
exports the query graph (into a fresh cache folder) before the query-graph rows.

    .venv/bin/python benchmarks/cli_latency.py [--store STORE] [--runs 5]

Targets: <= 2 s wall loading the text side; <= 1.0 s wall with the query graph (2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import free_port, wait_healthy  # noqa: E402
from bench_store import bench_store  # noqa: E402


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textitsr-bench")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    store = bench_store(args.store, args.workdir)
    cache = Path(tempfile.mkdtemp(prefix="textitsr-cli-bench-"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", XDG_CACHE_HOME=str(cache))
    env.pop("TEXTITSR_CACHE_DIR", None)
    search = [sys.executable, "-m", "textitsr.cli", "search", "a road is built across the bare land",
              "--store", str(store), "-k", "10"]
    checkpoint = store / json.loads((store / "manifest.json").read_text())["checkpoint"]  # absolute stays
    rows = []
    cold = [timed([*search, "--checkpoint", str(checkpoint)], env) for _ in range(args.runs)]
    rows.append(("cold process, loads text encoder + head (PyTorch)", cold, os.getloadavg()[0]))
    subprocess.run(search, env=env, check=True, stdout=subprocess.DEVNULL)  # exports the query graph
    graph = [timed(search, env) for _ in range(args.runs)]
    rows.append(("cold process, exported query graph (ONNX Runtime, no torch)", graph, os.getloadavg()[0]))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "textitsr.cli", "api", "--store", str(store),
                               "--port", str(port)], env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        served = [timed(search, env) for _ in range(args.runs)]
        rows.append(("cold process, `textitsr api` running for the store", served, os.getloadavg()[0]))
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\n`textitsr search` from a cold process, median of {args.runs} — "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {dt.date.today()}\n")
    print("| path | median wall s | median CPU s | load avg |")
    print("|---|---:|---:|---:|")
    for label, runs, load in rows:
        print(f"| {label} | {statistics.median(w for w, _ in runs):.2f} "
              f"| {statistics.median(c for _, c in runs):.2f} | {load:.0f} |")


if __name__ == "__main__":
    main()
