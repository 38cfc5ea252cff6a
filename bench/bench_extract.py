"""Region-feature extraction throughput: the full-size detector at the real input size.

Random weights (the layer shapes and the 300 post-NMS proposals are those of the real model, so
the work per image is the same), synthetic 500×700 images (resized to 600×840, as a typical meme),
box selection included (vgattr3636). One warm-up image per batch size is not timed.

    .venvs/torch/bin/python bench/bench_extract.py                    # CPU, batch 1 and 4
    .venvs/torch/bin/python bench/bench_extract.py --smoke --no-write  # the smoke profile's size
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hm_extract.config import BUTDConfig
from hm_extract.detector import random_detector
from hm_extract.selection import select_regions

RESULTS = Path(__file__).parent / "results" / "extract.md"


def synthetic(seed: int, height: int = 500, width: int = 700) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for _ in range(6):
        y, x = int(rng.integers(0, height - 50)), int(rng.integers(0, width - 50))
        pixels[y : y + int(rng.integers(30, 250)), x : x + int(rng.integers(30, 300))] = (
            rng.integers(80, 255, 3, dtype=np.uint8)
        )
    return Image.fromarray(pixels)


def images_per_second(config: BUTDConfig, batch: int, batches: int, device: str) -> float:
    detector = random_detector(config, seed=0).to(device)
    images = [synthetic(i) for i in range(batch * (batches + 1))]

    def run(chunk: list[Image.Image]) -> None:
        detections = detector([detector.transform.preprocess(im) for im in chunk])
        for image, det in zip(chunk, detections, strict=True):
            select_regions(det, (image.height, image.width), 36, 36)
        if device == "cuda":
            torch.cuda.synchronize()

    run(images[:1])  # warm-up: allocator, oneDNN/cuDNN kernels
    start = time.perf_counter()
    for i in range(1, batches + 1):
        run(images[i * batch : (i + 1) * batch])
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--images", type=int, default=4, help="timed images per batch size")
    parser.add_argument("--smoke", action="store_true", help="the smoke profile's input size")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    config = BUTDConfig().smoke() if args.smoke else BUTDConfig()
    rows = []
    for batch in args.batch_sizes:
        rate = images_per_second(config, batch, max(1, args.images // batch), args.device)
        rows.append((batch, rate))
        print(f"batch {batch}: {rate:.3f} images/s ({1 / rate:.1f} s/image)", flush=True)
    load = os.getloadavg()[0]
    header = (
        f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {args.device}, "
        f"{'smoke' if args.smoke else 'full'} input ({config.min_size}/{config.max_size}, "
        f"{config.post_nms_topk} proposals, RoIPool {config.pooler_resolution})\n\n"
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, 1-min load average at the end {load:.1f}. "
        f"Command: `.venvs/torch/bin/python bench/bench_extract.py "
        f"--device {args.device} --images {args.images}"
        f"{' --smoke' if args.smoke else ''}`\n\n"
        "| batch | images/s | s/image |\n|---|---|---|\n"
    )
    table = "".join(f"| {b} | {r:.3f} | {1 / r:.1f} |\n" for b, r in rows)
    if not args.no_write:
        if not RESULTS.exists():
            RESULTS.write_text("# Region-feature extraction benchmarks (bench/bench_extract.py)\n")
        with RESULTS.open("a") as handle:
            handle.write(header + table)


if __name__ == "__main__":
    main()
