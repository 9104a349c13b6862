"""HTTP API latency: warm text queries one after another, then 20 clients at once (loopback only).

Starts `textitsr api` on 127.0.0.1 over a store (the demo's when built, else a small synthetic one),
waits for /health, then measures from the client side (request sent -> JSON parsed):

- warm: `--queries` sequential POST /search/text after a few warm-up queries. Target: median <= 30 ms.
- concurrent: `--clients` threads, each sending `--per-client` queries back to back. Target: no errors.

    .venv/bin/python benchmarks/api.py [--store STORE] [--queries 100] [--clients 20 --per-client 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import bench_store  # noqa: E402
from search import SENTENCES as QUERIES  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 1200.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"`textitsr api` exited during start-up (code {proc.returncode})")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not healthy after {timeout_s:.0f} s")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query(client: httpx.Client, url: str, i: int) -> tuple[float, bool]:
    text = f"{QUERIES[i % len(QUERIES)]} {i}"
    t = time.perf_counter()
    try:
        r = client.post(f"{url}/search/text", json={"query": text, "k": 10}, timeout=60)
        ok = r.status_code == 200 and len(r.json()["hits"]) > 0
    except httpx.HTTPError:
        ok = False
    return (time.perf_counter() - t) * 1000, ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textitsr-bench")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=10)
    args = parser.parse_args()

    store = bench_store(args.store, args.workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "textitsr.cli", "api", "--store", str(store), "--port", str(port)], env=env
    )
    try:
        start_s = wait_healthy(url, proc)
        n_pairs = httpx.get(f"{url}/health").json()["n_pairs"]
        with httpx.Client() as client:
            for i in range(5):
                query(client, url, 10_000 + i)
            cpu0 = cpu_seconds(proc.pid)
            warm = [query(client, url, i) for i in range(args.queries)]
            server_cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000 / args.queries
        per_client = args.per_client

        def run_client(c: int) -> list[tuple[float, bool]]:
            with httpx.Client() as client:
                return [query(client, url, c * per_client + j) for j in range(per_client)]

        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [r for rs in pool.map(run_client, range(args.clients)) for r in rs]
        wall = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    warm_ms = [ms for ms, _ in warm]
    conc_ms = [ms for ms, _ in results]
    errors = sum(not ok for _, ok in results) + sum(not ok for _, ok in warm)
    p95 = lambda xs: statistics.quantiles(xs, n=20)[-1]  # noqa: E731
    print(f"\nHTTP API (`textitsr api`, loopback, POST /search/text k=10) over {n_pairs:,} pairs — "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {dt.date.today()}\n")
    print(f"load average during the run: {os.getloadavg()[0]:.0f} on {os.cpu_count()} CPUs\n")
    print("| measure | requests | median ms | p95 ms | errors | notes |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| server start -> healthy | 1 | {start_s * 1000:.0f} | | 0 | imports + model + index |")
    print(f"| warm, sequential | {len(warm)} | {statistics.median(warm_ms):.1f} | {p95(warm_ms):.1f} "
          f"| {sum(not ok for _, ok in warm)} | server CPU {server_cpu_ms:.1f} ms a query |")
    print(f"| {args.clients} concurrent clients | {len(results)} | {statistics.median(conc_ms):.1f} "
          f"| {p95(conc_ms):.1f} | {sum(not ok for _, ok in results)} "
          f"| {len(results) / wall:.0f} queries/s |")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
