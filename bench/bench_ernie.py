"""Training steps/s and peak memory of full-size ERNIE-ViL (ES = base, EL = large) on CPU.

Each size runs in its own process (peak RSS is per process): random weights, random inputs of the
upstream shapes (batch 8, 20 word pieces, 100 regions of 2048-d), the upstream optimiser.

    .venvs/paddle/bin/python bench/bench_ernie.py --steps 3 --write bench/results/ernie.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"ES": "base", "EL": "large"}


def _one(size: str, steps: int, batch: int, text_len: int, regions: int) -> dict[str, float]:
    import numpy as np
    import paddle

    from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes, hateful_loss
    from hm_paddle.train import TrainConfig, make_optimizer

    paddle.seed(0)
    model = ErnieVilForHatefulMemes(ErnieVilConfig.named(size))
    opt = make_optimizer(model, TrainConfig(warmup_steps=0))
    rng = np.random.default_rng(0)
    inputs = [
        paddle.to_tensor(a)
        for a in (
            rng.integers(1, 30522, (batch, text_len)).astype(np.int64),
            np.ones((batch, text_len), np.float32),
            rng.normal(size=(batch, regions, 2048)).astype(np.float32),
            rng.uniform(size=(batch, regions, 5)).astype(np.float32),
            np.ones((batch, regions), np.float32),
        )
    ]
    labels = paddle.to_tensor(rng.integers(0, 2, batch).astype(np.float32))
    times = []
    for _ in range(steps + 1):  # the first step (allocation, kernel selection) is not timed
        start = time.perf_counter()
        hateful_loss(model(*inputs), labels).backward()
        opt.step()
        opt.clear_grad()
        times.append(time.perf_counter() - start)
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "params_m": params / 1e6,
        "steps_per_s": len(times[1:]) / sum(times[1:]),
        "first_step_s": times[0],
        "peak_rss_gib": peak_gib,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=20)
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--models", default="ES,EL")
    parser.add_argument("--write", type=Path, help="append a results table to this markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _one(args.child, args.steps, args.batch, args.text_len, args.regions)
        print(json.dumps(result))
        return 0
    rows = []
    for letter in args.models.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            SIZES[letter],
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--text-len",
            str(args.text_len),
            "--regions",
            str(args.regions),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((letter, result))
        print(letter, result, flush=True)
    if args.write:
        cpu = platform.processor() or platform.machine()
        lines = [
            f"\n## {dt.date.today().isoformat()}: {platform.node()} ({cpu}, {os.cpu_count()} "
            f"cores, CPU only, paddlepaddle {_paddle_version()})\n",
            f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}` (batch "
            f"{args.batch}, {args.text_len} word pieces, {args.regions} regions, "
            f"{args.steps} timed steps after one warm-up step)\n",
            "| model | params (M) | train steps/s | first step (s) | peak RSS (GiB) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {r['params_m']:.1f} | {r['steps_per_s']:.3f} | "
            f"{r['first_step_s']:.1f} | {r['peak_rss_gib']:.2f} |"
            for m, r in rows
        ]
        header = "" if args.write.exists() else "# ERNIE-ViL benchmarks (bench/bench_ernie.py)\n"
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write(header + "\n".join(lines) + "\n")
    return 0


def _paddle_version() -> str:
    import paddle

    return paddle.__version__


if __name__ == "__main__":
    sys.exit(main())
