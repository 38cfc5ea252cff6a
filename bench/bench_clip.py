"""Model C's costs: the embed stage's throughput with a full-size CLIP ViT-L/14, and one
full-profile training run of C from a ready store.

1. Embedding: `hm_torch.clip_embed.ClipEncoder` (preprocessing + both towers + projections)
   over synthetic meme pictures (500×600 PNGs decoded from disk) and meme-length texts, with a
   random `CLIPModel` of ViT-L/14's shapes (vision 24 × 1024, patch 14, 224²; text 12 × 768;
   projection 768). Batch 1 and batch 16; the first batch is a warm-up and not counted.
   The tokenizer is the smoke profile's character-level one (more tokens per text than CLIP's
   BPE: an upper bound on the text side's cost, which is small next to the vision tower's).
2. Training: the train fit of C with the recipe's full-profile params (align, map 1024, 3
   pre-output layers, batch 64, 20 epochs) on a store of the real dataset's size (8,500 train,
   500 dev_seen memes; random vectors of ViT-L/14's widths). Early stopping is set to 20 so
   that all 20 epochs run: the longest a run can take.

    .venvs/torch/bin/python bench/bench_clip.py            # both
    .venvs/torch/bin/python bench/bench_clip.py --skip-embed
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hm_shared.spec import StageSpec
from hm_torch.clip_embed import COLUMNS, ClipEncoder, tiny_tokenizer, write_store
from hm_torch.train import train_stage

RESULTS = Path(__file__).parent / "results" / "clip.md"
RECIPES = Path(__file__).parents[1] / "orchestrator" / "orchestrator" / "recipes.toml"
TEXT = "when you finally find the group that was looking for you since 1999"


def vit_l14() -> ClipEncoder:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "vocab_size": 49408,
        },
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        },
        projection_dim=768,
    )
    model = CLIPModel(config).eval().requires_grad_(False)
    tokenizer = tiny_tokenizer(Path(tempfile.mkdtemp()))
    return ClipEncoder(model, tokenizer, CLIPImageProcessor(), 224, "random ViT-L/14")


def pictures(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (600, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        out.append(buffer.getvalue())
    return out


def embed_rate(encoder: ClipEncoder, batch: int, batches: int) -> float:
    """Memes per second, decoding included, after one warm-up batch."""
    data = pictures(batch)
    device = torch.device("cpu")

    def one() -> None:
        images = [Image.open(io.BytesIO(b)).convert("RGB") for b in data]
        encoder.encode(encoder.inputs(images, [TEXT] * batch), device)

    one()
    start = time.perf_counter()
    for _ in range(batches):
        one()
    return batch * batches / (time.perf_counter() - start)


def training_seconds(root: Path) -> tuple[float, dict]:
    rng = np.random.default_rng(0)
    prepared = root / "work" / "prepared"
    prepared.mkdir(parents=True)
    sizes = {"train": 8500, "dev_seen": 500}
    rows = {}
    next_id = 1
    for split, n in sizes.items():
        with open(prepared / f"{split}.jsonl", "w") as handle:
            for _ in range(n):
                meme = f"{next_id:05d}"
                next_id += 1
                label = int(rng.random() < 0.35)
                handle.write(
                    json.dumps({"id": meme, "img": f"img/{meme}.png", "text": TEXT, "label": label})
                    + "\n"
                )
                widths = {"image_pooled": 1024, "text_pooled": 768}
                rows[meme] = {
                    name: rng.standard_normal(widths.get(name, 768)).astype(np.float32)
                    for name in COLUMNS
                }
    store = root / "work" / "embeddings" / "clip"
    store.mkdir(parents=True)
    write_store(store / "embeddings.safetensors", rows, {"model": "random"})
    recipe = tomllib.loads(RECIPES.read_text())["models"]["C"]["params"]
    params = {
        **recipe,
        "early_stopping": 20,
        "model": "C",
        "run": "C1",
        "seed": 1,
        "fit": "train",
        "predict": ["dev_seen"],
        "valid": "dev_seen",
        "features": None,
        "extra_features": None,
    }
    spec = StageSpec(
        stage="train/C/C1/train",
        kind="train",
        env="torch",
        data_root=str(root),
        output="work/runs/C/C1/train",
        inputs={"prepared": "work/prepared", "embeddings": "work/embeddings/clip"},
        params=params,
    )
    start = time.perf_counter()
    train_stage(spec)
    return time.perf_counter() - start, json.loads((spec.output_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-embed", action="store_true")
    parser.add_argument("--batches", type=int, default=2, help="timed batches of 16")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    lines = [
        f"# Model C costs ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({threads} threads), cpu",
        "",
    ]
    if not args.skip_embed:
        encoder = vit_l14()
        one = embed_rate(encoder, 1, 8)
        sixteen = embed_rate(encoder, 16, args.batches)
        lines += [
            "| CLIP ViT-L/14 embedding | memes/s |",
            "|---|---|",
            f"| batch 1 (8 timed) | {one:.2f} |",
            f"| batch 16 ({args.batches} timed) | {sixteen:.2f} |",
            "",
        ]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, metrics = training_seconds(Path(tmp))
    lines += [
        f"C train fit, full profile (8,500 train / 500 dev, 20 epochs of batch 64): "
        f"{seconds:.1f} s (epochs run {metrics['epochs']}, device {metrics['device']})",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
