"""Time to the first training batch and peak memory: our feature store vs upstream's TSV loading.

For each dataset size, writes random region features (N images x B boxes x D floats) both as a
feature store (`hm_shared.features`) and as an upstream TSV, then measures, each in a fresh
subprocess (peak RSS = `resource.getrusage(RUSAGE_SELF).ru_maxrss`):

- ours:     open the store (reads the index only), gather a batch of `--batch` random images;
- upstream: what vilio's `load_obj_tsv` did: `csv.DictReader` over the whole TSV, base64-decode
            every array into a list of dicts, build the id → image dict, then gather the batch.

"warm" runs right after writing (files in the page cache); "cold" first evicts this benchmark's
own files from the page cache with `posix_fadvise(DONTNEED)` (nothing else on the machine).

    .venvs/host/bin/python bench/bench_features.py --images 2000 4000 \\
        --out bench/results/features.md
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf",
              "attrs_id", "attrs_conf", "num_boxes", "boxes", "features"]  # fmt: skip


def generate(root: Path, images: int, boxes: int, dim: int) -> dict[str, float]:
    from hm_shared.feature_tsv import encode_row
    from hm_shared.features import FeatureStoreWriter, RegionFeatures

    rng = np.random.default_rng(0)
    store_s = tsv_s = 0.0
    with FeatureStoreWriter(root / "store", dim) as writer, open(root / "hm.tsv", "wb") as tsv:
        for i in range(images):
            xy = rng.uniform(0, 300, (boxes, 2)).astype(np.float32)
            item = RegionFeatures(
                image_id=f"{i:05d}", image_h=480, image_w=640,
                boxes=np.concatenate([xy, xy + 50], axis=1),
                features=rng.standard_normal((boxes, dim), dtype=np.float32),
                object_ids=rng.integers(0, 1600, boxes), object_conf=rng.random(boxes, np.float32),
                attr_ids=rng.integers(0, 400, boxes), attr_conf=rng.random(boxes, np.float32),
            )  # fmt: skip
            start = time.perf_counter()
            writer.add(item)
            store_s += time.perf_counter() - start
            start = time.perf_counter()
            tsv.write(encode_row(item))
            tsv_s += time.perf_counter() - start
        start = time.perf_counter()
        tsv.flush()
        os.fsync(tsv.fileno())
        tsv_s += time.perf_counter() - start
        start = time.perf_counter()
    store_s += time.perf_counter() - start  # the writer's final flush (fsync + index)
    return {"write_store_s": store_s, "write_tsv_s": tsv_s}


def evict(paths: list[Path]) -> None:
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.iterdir()):
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ---- measured in a fresh process --------------------------------------------------------------


def first_batch_ours(root: Path, batch: int) -> dict[str, float]:
    start = time.perf_counter()
    from hm_shared.features import FeatureStore

    imported = time.perf_counter()
    store = FeatureStore(root)
    opened = time.perf_counter()
    ids = random.Random(1).sample(store.ids(), batch)  # not np.random: its import costs ~30 ms
    items = [store[i] for i in ids]
    feats = np.stack([it.features for it in items])  # (batch, boxes, dim), copied out of the map
    boxes = np.stack([it.boxes for it in items])  # (batch, boxes, 4)
    done = time.perf_counter()
    assert feats.shape[0] == boxes.shape[0] == batch
    return {
        "import_s": imported - start,
        "open_s": opened - imported,
        "first_batch_s": done - start,
    }


def first_batch_upstream(path: Path, batch: int) -> dict[str, float]:
    start = time.perf_counter()
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(path) as handle:
        for item in csv.DictReader(handle, FIELDNAMES, delimiter="\t"):
            for key in ("img_h", "img_w", "num_boxes"):
                item[key] = int(item[key])
            n = item["num_boxes"]
            for key, shape, dtype in [
                ("objects_id", (n,), np.int64), ("objects_conf", (n,), np.float32),
                ("attrs_id", (n,), np.int64), ("attrs_conf", (n,), np.float32),
                ("boxes", (n, 4), np.float32), ("features", (n, -1), np.float32),
            ]:  # fmt: skip
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            data.append(item)
    by_id = {int(item["img_id"]): item for item in data}
    opened = time.perf_counter()
    ids = random.Random(1).sample(sorted(by_id), batch)
    feats = np.stack([by_id[i]["features"] for i in ids])  # (batch, boxes, dim)
    boxes = np.stack([by_id[i]["boxes"] for i in ids])  # (batch, boxes, 4)
    done = time.perf_counter()
    assert feats.shape[0] == boxes.shape[0] == batch
    return {"import_s": 0.0, "open_s": opened - start, "first_batch_s": done - start}


def child(mode: str, path: Path, batch: int) -> None:
    if mode == "ours":
        result = first_batch_ours(path, batch)
    elif mode == "upstream":
        result = first_batch_upstream(path, batch)
    else:  # baseline: the interpreter with numpy imported
        result = {"import_s": 0.0, "open_s": 0.0, "first_batch_s": 0.0}
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(mode: str, path: Path, batch: int, cold: bool) -> dict[str, float]:
    if cold:
        evict([path])
    cmd = [sys.executable, __file__, "_child", mode, str(path), str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


# ---- driver -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="bench-features-", dir=args.workdir))
    rows = []
    baseline = measure("baseline", workdir, args.batch, cold=False)["maxrss_mb"]
    try:
        for images in args.images:
            root = workdir / str(images)
            root.mkdir()
            print(f"{images} images: writing ...", file=sys.stderr, flush=True)
            writes = generate(root, images, args.boxes, args.dim)
            sizes = {
                "store_gb": sum(p.stat().st_size for p in (root / "store").iterdir()) / 1e9,
                "tsv_gb": (root / "hm.tsv").stat().st_size / 1e9,
            }
            for cache in ("warm", "cold"):
                ours = [measure("ours", root / "store", args.batch, cache == "cold")
                        for _ in range(args.repeat)]  # fmt: skip
                print(f"  ours {cache}: {ours}", file=sys.stderr, flush=True)
                upstream = measure("upstream", root / "hm.tsv", args.batch, cache == "cold")
                print(f"  upstream {cache}: {upstream}", file=sys.stderr, flush=True)
                rows.append((images, cache, ours, upstream, writes, sizes))
            shutil.rmtree(root)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(args, rows, baseline)


def report(args: argparse.Namespace, rows: list, baseline: float) -> str:
    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    lines = [
        "## Region-feature store vs upstream TSV loading (region-feature extraction, part 4)",
        "",
        f"{datetime.date.today().isoformat()}, {platform.node() or 'host'}: {platform.platform()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores. "
        f"Random features, {args.boxes} boxes x {args.dim} floats per image, first batch = "
        f"{args.batch} random images. Command: `.venvs/host/bin/python bench/bench_features.py "
        f"--images {' '.join(map(str, args.images))} --repeat {args.repeat}`.",
        f"Peak RSS of a bare interpreter with numpy imported: {baseline:.0f} MB (included below).",
        "",
        "| images | page cache | ours: import | ours: open index | ours: first batch "
        "| upstream: first batch | speed-up | ours: peak RSS | upstream: peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for images, cache, ours, upstream, _writes, _sizes in rows:
        first = med(ours, "first_batch_s")
        lines.append(
            f"| {images} | {cache} | {med(ours, 'import_s') * 1e3:.0f} ms "
            f"| {med(ours, 'open_s') * 1e3:.1f} ms | {first * 1e3:.0f} ms "
            f"| {upstream['first_batch_s']:.1f} s | {upstream['first_batch_s'] / first:,.0f}x "
            f"| {med(ours, 'maxrss_mb'):.0f} MB | {upstream['maxrss_mb']:,.0f} MB |"
        )
    lines += ["", "| images | store on disk | TSV on disk | write store | write TSV (base64) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for images, cache, _ours, _upstream, writes, sizes in rows:
        if cache == "warm":
            lines.append(
                f"| {images} | {sizes['store_gb']:.2f} GB | {sizes['tsv_gb']:.2f} GB "
                f"| {writes['write_store_s']:.1f} s | {writes['write_tsv_s']:.1f} s |"
            )
    lines += [
        "",
        f'ours = median of {args.repeat} fresh processes; upstream = one process. "first batch" '
        "counts from before the import of the reader (`hm_shared.features`: dataclasses, json, "
        'numpy.memmap) to the stacked (batch, boxes, dim) array; "open index" is '
        "`FeatureStore(root)` alone.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--boxes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes for ours")
    parser.add_argument("--workdir", type=Path, default=None, help="where the data is written")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    text = run(args)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
