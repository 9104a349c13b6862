"""App latency as an analyst feels it: cold start to first result, and warm text searches rendered.

Starts a real `streamlit run app.py` on 127.0.0.1 over an existing store (the demo's by default),
drives headless Debian chromium through Playwright, and prints a markdown table:

- cold start: from launching the server process to the first query's results being on screen
  (server start + model/store load + first search + render). Target <= 10 s.
- warm search: from pressing Enter on a new query to its results being on screen. Target <= 1 s.

Usage: .venv/bin/python benchmarks/app_latency.py [--store data/demo/store] [--queries 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

from textitsr.config import REPO_ROOT, DemoPaths
from textitsr.demo import app_environment, streamlit_command

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
QUERIES = [
    "a road and several houses are built on the bare land",
    "many new buildings were built",
    "the trees are cut down",
    "a pond appears in the field",
    "the road is extended to the right",
    "some houses are demolished",
    "the vegetation grows back on the bare ground",
    "the lake shrinks",
    "nothing has changed",
    "the forest is cleared to make room for houses",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("streamlit exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("streamlit did not become healthy")


def _search(page, query: str) -> float:
    """Type `query`, press Enter, return seconds until its result caption and images are shown."""
    box = page.get_by_label("Describe the change", exact=True)
    box.fill(query)
    start = time.perf_counter()
    box.press("Enter")
    page.get_by_text(f"for “{query}”", exact=False).first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 2"
    )
    return time.perf_counter() - start


def main() -> None:
    demo = DemoPaths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=demo.store)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=len(QUERIES))
    args = parser.parse_args()
    if not (args.store / "manifest.json").exists():
        raise SystemExit(f"no store at {args.store}: run `textitsr demo --prepare-only` first")

    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = app_environment(args.store, args.checkpoint, [args.store.parent])
    env["TEXTITSR_BASEMAP"] = "none"
    t0 = time.perf_counter()
    proc = subprocess.Popen(streamlit_command("127.0.0.1", port), cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_healthy(url, proc)
        server_ready = time.perf_counter() - t0
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/Text_search")
            page.get_by_label("Describe the change", exact=True).wait_for()
            _search(page, QUERIES[0])
            cold = time.perf_counter() - t0
            warm = [_search(page, q) for q in (QUERIES * 3)[1 : args.queries + 1]]
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)

    warm_sorted = sorted(warm)
    p95 = warm_sorted[min(len(warm_sorted) - 1, int(0.95 * len(warm_sorted)))]
    print(f"App latency — {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{date.today().isoformat()}, store {args.store}\n")
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| server healthy after launch | {server_ready:.1f} s | |")
    print(f"| cold start to first result on screen | {cold:.1f} s | <= 10 s |")
    print(f"| warm text search rendered, median of {len(warm)} | {statistics.median(warm) * 1000:.0f} ms "
          f"| <= 1000 ms |")
    print(f"| warm text search rendered, p95 | {p95 * 1000:.0f} ms | |")


if __name__ == "__main__":
    main()
