"""Learning: on synthetic memes whose label needs both the picture and the text (with benign
confounders), B must clearly beat its own text-only and image-only ablations on dev AUROC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spec_helpers import make_spec

from hm_torch.train import train_stage

MARGIN = 0.1
RUN = {
    "model": "B",
    "run": "B0",
    "seed": 0,
    "fit": "train",
    "predict": ["dev_seen"],
    "valid": "dev_seen",
}
PARAMS = {
    "backbone": "small_cnn",
    "small_cnn_width": 8,
    "image_size": 32,
    "text_dim": 64,
    "fasttext_bucket": 20000,
    "fasttext_epoch": 50,  # a few hundred short texts: fastText's 5 epochs barely move the vectors
    "vision_dim": 32,
    "language_dim": 32,
    "fusion_dim": 64,
    "cache_images": True,
    "lr": 3e-3,
    "epochs": 8,
    "batch_size": 16,
    "balance": "loss",
    "log_every": 5,
}


def _dev_auroc(root: Path, modalities: str) -> float:
    spec = make_spec(
        f"train/B/{modalities}/train",
        root,
        kind="train",
        env="torch",
        output=f"work/runs/{modalities}",
        inputs={"prepared": "work/prepared", "hm": "hm"},
        run=RUN,
        recipe={**PARAMS, "modalities": modalities},
    )
    train_stage(spec)
    metrics = json.loads((spec.output_dir / "metrics.json").read_text())
    return metrics["dev_seen"]["auroc"]


@pytest.mark.slow
def test_fusion_beats_both_ablations(learning_data: Path) -> None:
    both = _dev_auroc(learning_data, "both")
    text = _dev_auroc(learning_data, "text")
    image = _dev_auroc(learning_data, "image")
    assert both >= 0.9, (both, text, image)
    assert both - max(text, image) >= MARGIN, (both, text, image)
