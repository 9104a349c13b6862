"""Where the time of the Annotate page's "Update model" goes: each named step of `update_model`.

Seeds 16 answers from the simulated analyst (same change type = similar) in a scratch workspace,
loads the model first (the app holds it from its first search), then times `update_model` step by
step (wall and CPU seconds of this process) and the page's rerun afterwards (`history()`).
Prints a markdown table. CPU seconds are what a quiet machine would take; wall seconds also hold
the waiting on a busy one.

Usage: .venv/bin/python benchmarks/update_time.py [--store data/demo/store] [--labels 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from textitsr.config import DemoPaths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DemoPaths().store)
    parser.add_argument("--labels", type=int, default=16)
    args = parser.parse_args()
    import importlib.util

    from textitsr.active.rounds import AnnealSession
    from textitsr.embedding.encode import load_model

    spec = importlib.util.spec_from_file_location("app_latency", Path(__file__).with_name("app_latency.py"))
    app_latency = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_latency)
    work = Path(tempfile.mkdtemp(prefix="textitsr-update-time-"))
    app_latency.seed_labels(args.store, work, args.labels)
    session = AnnealSession(args.store, work)
    t, c = time.perf_counter(), time.process_time()
    load_model(session.checkpoint)
    rows = [("model load (once per app process, before any update)", time.perf_counter() - t,
             time.process_time() - c)]
    last: list = [time.perf_counter(), time.process_time(), None]

    def step(_fraction: float, message: str) -> None:
        now, cpu, name = time.perf_counter(), time.process_time(), message.split(":")[0]
        if name != last[2]:
            if last[2] is not None:
                rows.append((last[2], now - last[0], cpu - last[1]))
            last[:] = [now, cpu, name]

    load = os.getloadavg()
    t, c = time.perf_counter(), time.process_time()
    metrics = session.update_model(step)
    rows.append(("**update_model in all**", time.perf_counter() - t, time.process_time() - c))
    t, c = time.perf_counter(), time.process_time()
    session.history()
    rows.append(("page rerun after it: metric history", time.perf_counter() - t, time.process_time() - c))
    print(f"{args.labels} labels ({int(metrics.get('n_heldout', 0))} held out), store {args.store}, "
          f"load {load[0]:.1f} at the start\n")
    print("| step | wall s | CPU s |\n|---|---:|---:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
