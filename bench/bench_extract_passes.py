"""All six feature variants: one detector pass per variant (the old path) vs one per checkpoint.

Both paths run `hm_extract.extract.extract_images` on the same synthetic 500×700 images with the
same random full-size detectors (the attribute and the plain checkpoint's layer shapes): the old
path with one store per call (six calls), the new with all of a checkpoint's stores in one call
(two calls). Decoding, detection, box selection and the store writes are all timed; the detector
build is not (both paths build each checkpoint's detector once). The stores of both paths are
compared byte for byte before the numbers are written.

    .venvs/extract/bin/python bench/bench_extract_passes.py --images 3           # full input size
    .venvs/extract/bin/python bench/bench_extract_passes.py --images 20 --smoke  # smoke size
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from bench_extract import synthetic

from hm_extract.config import VARIANTS, BUTDConfig
from hm_extract.detector import random_detector
from hm_extract.extract import StoreTarget, extract_images
from hm_extract.images import list_images

RESULTS = Path(__file__).parent / "results" / "extract_passes.md"


def _targets(root: Path, weights: str) -> list[StoreTarget]:
    return [
        StoreTarget(v.name, root / v.name, v.min_boxes, v.max_boxes)
        for v in VARIANTS.values()
        if v.weights == weights
    ]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the smoke profile's input size")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-passes-"))
    try:
        (work / "img").mkdir()
        for i in range(args.images):
            synthetic(i).save(work / "img" / f"{i + 1:05d}.png")
        items = list_images(work / "img")
        seconds = {"per variant": 0.0, "per checkpoint": 0.0}
        for weights in ("attr", "plain"):
            config = BUTDConfig.for_weights(weights)
            detector = random_detector(config.smoke() if args.smoke else config, seed=0)
            extract_images(detector, items[:1], _targets(work / "warm-up", weights))
            start = time.perf_counter()
            for target in _targets(work / "old", weights):
                extract_images(detector, items, [target])
            seconds["per variant"] += time.perf_counter() - start
            start = time.perf_counter()
            extract_images(detector, items, _targets(work / "new", weights))
            seconds["per checkpoint"] += time.perf_counter() - start
        for name in VARIANTS:
            assert _bytes(work / "old" / name) == _bytes(work / "new" / name), name
    finally:
        shutil.rmtree(work)
    ratio = seconds["per variant"] / seconds["per checkpoint"]
    size = "smoke" if args.smoke else "full"
    for path, value in seconds.items():
        print(f"{path}: {value:.1f} s ({value / args.images:.2f} s/image)")
    print(f"speed-up: {ratio:.2f}x ({size} input, {args.images} images, stores byte-identical)")
    if args.no_write:
        return
    load = os.getloadavg()[0]
    header = (
        f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {size} input, {args.images} images, "
        "all six variants\n\n"
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, 1-min load average at the end {load:.1f}. Command: "
        f"`.venvs/extract/bin/python bench/bench_extract_passes.py --images {args.images}"
        f"{' --smoke' if args.smoke else ''}`\n\n"
        "| path | detector passes per image | wall time | s/image |\n|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {path} | {passes} | {seconds[path]:.1f} s | {seconds[path] / args.images:.2f} |\n"
        for path, passes in (("per variant", 6), ("per checkpoint", 2))
    )
    if not RESULTS.exists():
        RESULTS.write_text("# One detector pass per checkpoint (bench/bench_extract_passes.py)\n")
    with RESULTS.open("a") as handle:
        handle.write(header + rows + f"\nSpeed-up: **{ratio:.2f}×**; stores byte-identical.\n")


if __name__ == "__main__":
    main()
