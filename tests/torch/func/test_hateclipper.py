"""Model C (Hate-CLIPper's head) on an embedding store, and the embed stage as a process.

Learning: a frozen CLIP gives each picture category and each text predicate its own direction;
the store here holds such vectors (a fixed random code per category / predicate plus noise) for
the synthetic memes, whose label is picture-is-target AND text-is-attack with both
confounders. C must learn it; its image-only and text-only ablations must do no better than
one cue alone allows: the AUROC of the cue itself (target picture / attack text) as the score,
about 0.75 here, since a non-target picture or a benign text is never hateful.
(A random tiny CLIP does not separate the cues: that is what pretraining buys.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
from conftest import LEARNING_SIZES
from spec_helpers import make_spec

from hm_shared.dataset import read_prepared
from hm_shared.metrics import auroc
from hm_shared.synthetic import ATTACK, BENIGN, CATEGORIES, plan
from hm_torch.clip_embed import COLUMNS, STORE_FILE, EmbeddingStore, write_store
from hm_torch.train import train_stage

RUN = {
    "model": "C",
    "run": "C0",
    "seed": 0,
    "fit": "train",
    "predict": ["dev_seen"],
    "valid": "dev_seen",
}
PARAMS = {
    "map_dim": 32,
    "num_pre_output_layers": 1,
    "lr": 3e-3,
    "schedule": "constant",
    "warmup": 0.0,
    "epochs": 40,
    "batch_size": 32,
    "early_stopping": 40,
    "early_stopping_metric": "dev_auroc",
    "log_every": 50,
}


def _cue_store(root: Path) -> Path:
    """An embedding store for the learning set's memes (same seed and sizes as the fixture)."""
    rng = np.random.default_rng(0)
    image_code = {c.name: rng.standard_normal(48) for c in CATEGORIES}
    text_code = {p: rng.standard_normal(40) for p in (*ATTACK, *BENIGN)}
    rows = {}
    for memes in plan(seed=0, sizes=LEARNING_SIZES).values():
        for meme in memes:
            phrase = next(p for p in (*ATTACK, *BENIGN) if p in meme.text)
            image = image_code[meme.scene.category.name] + 0.3 * rng.standard_normal(48)
            text = text_code[phrase] + 0.3 * rng.standard_normal(40)
            rows[meme.stem] = {
                "image_pooled": image.astype(np.float32),
                "text_pooled": text.astype(np.float32),
                "image_embeds": image[:16].astype(np.float32),
                "text_embeds": text[:16].astype(np.float32),
            }
    store = root / "work" / "embeddings" / "cues"
    store.mkdir(parents=True, exist_ok=True)
    write_store(store / STORE_FILE, rows, {"model": "cue codes"})
    return store


def _dev_auroc(root: Path, modalities: str, fusion: str = "align") -> float:
    spec = make_spec(
        f"train/C/{modalities}-{fusion}/train",
        root,
        kind="train",
        env="torch",
        output=f"work/runs/C-{modalities}-{fusion}",
        inputs={"prepared": "work/prepared", "embeddings": "work/embeddings/cues"},
        run=RUN,
        recipe={**PARAMS, "modalities": modalities, "fusion": fusion},
    )
    train_stage(spec)
    metrics = json.loads((spec.output_dir / "metrics.json").read_text())
    assert 1 <= metrics["best_epoch"] <= PARAMS["epochs"]
    return metrics["dev_seen"]["auroc"]


def _one_cue_aurocs(root: Path) -> tuple[float, float]:
    """dev_seen AUROC of the picture cue alone and of the text cue alone, as scores."""
    planned = {m.stem: m for memes in plan(seed=0, sizes=LEARNING_SIZES).values() for m in memes}
    dev = read_prepared(root / "work" / "prepared" / "dev_seen.jsonl")
    labels = np.array([m.label for m in dev])
    target = np.array([planned[m.id].scene.category.target for m in dev], dtype=float)
    attack = np.array([planned[m.id].attack for m in dev], dtype=float)
    return auroc(labels, target), auroc(labels, attack)


@pytest.mark.slow
def test_c_learns_the_xor_memes_and_its_ablations_do_not(learning_data: Path) -> None:
    _cue_store(learning_data)
    image_cue, text_cue = _one_cue_aurocs(learning_data)
    both = _dev_auroc(learning_data, "both")
    cross = _dev_auroc(learning_data, "both", "cross")
    text = _dev_auroc(learning_data, "text")
    image = _dev_auroc(learning_data, "image")
    found = (both, cross, text, image, image_cue, text_cue)
    assert both >= 0.95 and cross >= 0.95, found
    assert image <= image_cue + 0.05 and text <= text_cue + 0.05, found


def _embed_spec(root: Path, output: str) -> Path:
    spec = make_spec(
        "embed/clip",
        root,
        output=output,
        inputs={"prepared": "work/prepared", "hm": "hm"},
        params={
            "tiny": True,
            "image_size": 160,
            "tiny_patch": 8,
            "tiny_width": 64,
            "batch_size": 2,
            "num_workers": 0,
            "commit_every_s": 0.0,
        },
    )
    path = root / f"{output.replace('/', '-')}.json"
    spec.write(path)
    return path


def test_a_killed_embed_stage_resumes_to_the_store_of_an_unbroken_run(tiny_data: Path) -> None:
    spec = _embed_spec(tiny_data, "work/.attempts/embed-clip/k1")
    out = tiny_data / "work/.attempts/embed-clip/k1"
    progress = out / "checkpoint" / "progress.lmdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hm_torch", "embed", "--spec", str(spec)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300

    def committed() -> int:
        if not (progress / "data.mdb").is_file():
            return 0
        env = lmdb.open(str(progress), readonly=True, lock=False)
        try:
            return int(env.stat()["entries"])
        finally:
            env.close()

    while committed() == 0:
        assert proc.poll() is None, "the stage ended before its first commit"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done = committed()
    resumed = subprocess.run(
        [sys.executable, "-m", "hm_torch", "embed", "--spec", str(spec)],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert 0 < done < stats["memes"]
    assert stats["encoded_now"] == stats["memes"] - done
    assert not (out / "checkpoint").exists()  # resume state dropped once the store is written

    clean_spec = _embed_spec(tiny_data, "work/.attempts/embed-clip/k2")
    clean = subprocess.run(
        [sys.executable, "-m", "hm_torch", "embed", "--spec", str(clean_spec)],
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stderr
    resumed_store = EmbeddingStore.open(out)
    clean_store = EmbeddingStore.open(tiny_data / "work/.attempts/embed-clip/k2")
    assert resumed_store.ids == clean_store.ids and len(clean_store.ids) == stats["memes"]
    for name in COLUMNS:
        np.testing.assert_allclose(
            resumed_store.columns[name], clean_store.columns[name], rtol=0, atol=1e-6
        )
