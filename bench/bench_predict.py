"""Throughput of `orchestrator predict` for B and U on this machine: OCR, extraction, model time.

Two parts, each a measurement of its own:

- pipeline (smoke profile, end to end): a one-run B,U smoke run on the synthetic dataset, then
  `orchestrator predict` on N new synthetic memes given without text (so OCR runs). Reported:
  the command's wall time and each stage's own seconds from its record (intake = OCR + copying,
  the extract stage, one predict stage per model, averages + scores).
- full size (random weights, one part a process): what dominates a full-profile predict, per
  meme: the bottom-up-attention detector at its full input size (batch 1, box selection
  included; extract venv), B's forward (ResNet-152 at 224² + the fastText projection) and U's
  forward (UNITER-base, 36 boxes, 40 tokens) at the eval batch size (torch venv), and OCR of a
  640×360 meme with a two-line caption (host venv).

    .venvs/host/bin/python bench/bench_predict.py                 # both parts, writes results
    .venvs/host/bin/python bench/bench_predict.py --memes 8 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENVS = REPO / ".venvs"
RESULTS = REPO / "bench" / "results" / "predict.md"
SELECTION = ["--models", "B,U", "--profile", "smoke", "--topk", "20"]


def _orchestrator(tmp: Path, *args: str) -> float:
    command = [str(VENVS / "host/bin/orchestrator"), *args, *SELECTION]
    command += ["--recipes", str(tmp / "recipes.toml"), "--data", str(tmp / "data")]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def pipeline(memes: int) -> dict[str, float]:
    sys.path.insert(0, str(REPO / "tests"))
    from recipe_helpers import one_run_recipes

    from hm_shared.synthetic import generate

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        recipes = one_run_recipes(REPO / "orchestrator/orchestrator/recipes.toml", ["B", "U"])
        (tmp / "recipes.toml").write_text(recipes)
        _orchestrator(tmp, "run", "--synthetic")
        generate(tmp / "new-dataset", seed=3)
        queue = tmp / "queue"
        queue.mkdir()
        for image in sorted((tmp / "new-dataset/img").iterdir())[:memes]:
            shutil.copy(image, queue / image.name)
        wall = _orchestrator(tmp, "predict", "--input", str(queue))
        seconds: dict[str, float] = {"wall": wall}
        for path in (tmp / "data/work/state/records").glob("predict-*.json"):
            record = json.loads(path.read_text())
            stage = record["stage"].split("/", 2)[2]  # predict/<tag>/<stage>
            part = stage if stage.startswith(("intake", "extract")) else None
            if stage.startswith("run/"):
                part = f"model {stage.split('/')[1]}"
            seconds[part or "averages + scores"] = (
                seconds.get(part or "averages + scores", 0.0) + record["seconds"]
            )
        return seconds


def detector(images: int) -> float:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_extract import images_per_second

    from hm_extract.config import BUTDConfig

    return 1.0 / images_per_second(BUTDConfig(), batch=1, batches=images, device="cpu")


def models(memes: int) -> dict[str, float]:
    import torch

    from hm_torch.models.baseline import BaselineConfig, build_model
    from hm_torch.models.uniter import UniterConfig, UniterForHatefulMemes

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    b = build_model(BaselineConfig(), weights=None).eval()
    u_config = UniterConfig.base()
    u = UniterForHatefulMemes(u_config).eval()
    inputs = {
        "B": {"image": torch.randn(memes, 3, 224, 224), "text_vec": torch.randn(memes, 300)},
        "U": {
            "input_ids": torch.randint(1, u_config.vocab_size, (memes, 40)),
            "text_mask": torch.ones(memes, 40),
            "img_feats": torch.randn(memes, 36, u_config.img_dim),
            "img_pos": torch.rand(memes, 36, u_config.pos_dim),
            "img_mask": torch.ones(memes, 36),
        },
    }
    per_meme = {}
    with torch.inference_mode():
        for name, model in (("B", b), ("U", u)):
            model(inputs[name])  # warm-up
            start = time.perf_counter()
            model(inputs[name])
            per_meme[name] = (time.perf_counter() - start) / memes
    return per_meme


def ocr(memes: int) -> float:
    from PIL import Image, ImageDraw, ImageFont

    from hm_shared.ocr import read_texts

    font = ImageFont.load_default(size=28)
    with tempfile.TemporaryDirectory() as name:
        paths = []
        for i in range(memes):
            image = Image.new("RGB", (640, 360), (40 + 10 * i, 90, 140))
            draw = ImageDraw.Draw(image)
            for y, line in ((20, f"meme number {i} says"), (300, "something about someone")):
                draw.text(
                    (20, y), line, font=font, fill="white", stroke_width=2, stroke_fill="black"
                )
            paths.append(Path(name) / f"{i}.png")
            image.save(paths[-1])
        start = time.perf_counter()
        read_texts(paths)  # as the intake stage reads them: one Tesseract process per core
        return (time.perf_counter() - start) / memes


def _part(python: str, part: str, n: int) -> object:
    done = subprocess.run(
        [str(VENVS / python / "bin/python"), __file__, "--part", part, "--memes", str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memes", type=int, default=24, help="new memes the pipeline scores")
    parser.add_argument("--part", choices=("pipeline", "detector", "models", "ocr"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    parts = {"pipeline": pipeline, "detector": detector, "models": models, "ocr": ocr}
    if args.part:  # one part, in the venv that has its code
        n = {"detector": 2, "models": 8, "ocr": 16}.get(args.part, args.memes)
        print(json.dumps(parts[args.part](n)))
        return
    smoke = pipeline(args.memes)
    full = {
        "detector": _part("extract", "detector", 2),
        "models": _part("torch", "models", 8),
        "ocr": _part("host", "ocr", 16),
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## predict throughput, {stamp}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "",
        f"Smoke profile, B and U one run each, {args.memes} new memes with OCR "
        f"(`bench/bench_predict.py`):",
        "",
        "| part | seconds | memes/s |",
        "|---|---|---|",
    ]
    for part, seconds in sorted(smoke.items(), key=lambda kv: kv[0] != "wall"):
        lines.append(f"| {part} | {seconds:.1f} | {args.memes / seconds:.2f} |")
    detector_s, ocr_s = full["detector"], full["ocr"]
    b_s, u_s = full["models"]["B"], full["models"]["U"]
    lines += [
        "",
        "Full size, random weights, seconds per meme:",
        "",
        "| part | s/meme |",
        "|---|---|",
        f"| OCR (Tesseract, 3 binarisations, {os.cpu_count()} processes) | {ocr_s:.2f} |",
        f"| detector, full input size, batch 1 (U's features) | {detector_s:.2f} |",
        f"| B forward (ResNet-152 224² + fastText), batch 8 | {b_s:.3f} |",
        f"| U forward (UNITER-base, 36 boxes, 40 tokens), batch 8 | {u_s:.3f} |",
        f"| B: OCR + model | {ocr_s + b_s:.2f} ({1 / (ocr_s + b_s):.2f} memes/s) |",
        f"| U: OCR + detector + model | {ocr_s + detector_s + u_s:.2f} "
        f"({1 / (ocr_s + detector_s + u_s):.3f} memes/s) |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
