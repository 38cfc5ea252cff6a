"""Orchestrator timings: the smoke pipeline's wall time and the no-op rerun time.

    .venvs/host/bin/python bench/bench_orchestrator.py [--models B] [--topk 20] [--venvs DIR]

Runs `orchestrator run --models … --topk … --profile smoke --runtime local` in a fresh data dir
(the synthetic dataset is generated on the first run and timed separately from it by the
stage records), then reruns it `--reruns` times (every stage cached) and times `plan`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="B")
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--venvs", type=Path, default=REPO / ".venvs")
    parser.add_argument("--reruns", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="default: a fresh temp dir")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="hm-bench-")) / "data"
    select = [
        "--models",
        args.models,
        "--topk",
        str(args.topk),
        "--profile",
        "smoke",
        "--data",
        str(data),
    ]
    run = [ORCHESTRATOR, "run", *select, "--runtime", "local", "--venvs", str(args.venvs)]
    run.append("--synthetic")  # generated on the first run, when the data dir has no dataset
    first = timed(run)
    stages = {}
    for path in sorted((data / "work/state/records").glob("*.json")):
        record = json.loads(path.read_text())
        stages[record["stage"]] = record["seconds"]
    reruns = [timed(run) for _ in range(args.reruns)]
    plans = [timed([ORCHESTRATOR, "plan", *select]) for _ in range(args.reruns)]
    print(
        f"date: {datetime.now(UTC).date()}  machine: {platform.node()} "
        f"({platform.processor() or platform.machine()})"
    )
    print(f"command: {' '.join(run)}")
    print(f"smoke pipeline wall time (incl. dataset generation): {first:.1f} s")
    for stage, seconds in stages.items():
        print(f"  {stage:<24} {seconds:8.1f} s")
    print(
        f"no-op rerun: median {statistics.median(reruns):.2f} s "
        f"(min {min(reruns):.2f}, max {max(reruns):.2f}, n={len(reruns)})"
    )
    print(f"plan: median {statistics.median(plans):.2f} s (n={len(plans)})")
    print(f"data dir: {data}")


if __name__ == "__main__":
    main()
