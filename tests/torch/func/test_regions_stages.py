"""`python -m hm_torch {pretrain,train}` for U, O and V on a real feature store and prepared
splits (smoke profile: tiny models, trained vocabularies)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spec_helpers import make_spec

from hm_shared.dataset import Meme, write_prepared
from hm_shared.features import FeatureStoreWriter, RegionFeatures
from hm_torch.checkpoints import native_metadata

DIM = 16
WORDS = ["cat", "dog", "love", "hate", "people", "funny", "meme", "day", "when", "you"]
SMOKE = {
    "size": "tiny",
    "epochs": 1,
    "batch_size": 4,
    "lr": 1e-4,
    "max_regions": 5,
    "checkpoint_every": 0,
}


def _memes(prefix: int, n: int, rng: np.random.Generator, labelled: bool = True) -> list[Meme]:
    memes = []
    for i in range(n):
        meme_id = f"{prefix}{i:04d}"
        text = " ".join(rng.choice(WORDS, 5))
        memes.append(Meme(meme_id, f"img/{meme_id}.png", text, int(i % 2) if labelled else None))
    return memes


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    splits = {
        "train": _memes(1, 16, rng),
        "dev_seen": _memes(2, 8, rng),
        "test_seen": _memes(3, 6, rng, labelled=False),
        "pretrain": _memes(4, 16, rng),
    }
    prepared = root / "work" / "prepared"
    for name, memes in splits.items():
        write_prepared(prepared / f"{name}.jsonl", memes)
    with FeatureStoreWriter(root / "work" / "features" / "vgattr5050", feature_dim=DIM) as out:
        for meme in (m for memes in splits.values() for m in memes):
            n = int(rng.integers(2, 8))
            xy = rng.uniform(0, 50, (n, 2))
            out.add(
                RegionFeatures(
                    meme.id,
                    120,
                    160,
                    np.concatenate([xy, xy + 40], 1).astype(np.float32),
                    rng.normal(size=(n, DIM)).astype(np.float32),
                    rng.integers(0, 1600, n),
                    rng.uniform(size=n).astype(np.float32),
                    np.zeros(n, np.int64),
                    np.zeros(n, np.float32),
                )
            )
    return root


def _run(
    root: Path, kind: str, name: str, inputs: dict[str, str], params: dict[str, Any], letter: str
) -> subprocess.CompletedProcess[str]:
    """Run `kind` of model `letter` as run "<letter>1" (seed 1) on the vgattr5050 store; a
    train stage fits `train`, validates on dev_seen and predicts dev_seen and test_seen."""
    output = f"work/.attempts/{name}"
    run: dict[str, Any] = {
        "model": letter,
        "run": f"{letter}1",
        "seed": 1,
        "features": "vgattr5050",
    }
    if kind == "train":
        run |= {"fit": "train", "predict": ["dev_seen", "test_seen"], "valid": "dev_seen"}
    spec = make_spec(
        name, root, kind=kind, env="torch", output=output, inputs=inputs, recipe=params, run=run
    )
    spec_path = root / f"{name}.json"
    spec.write(spec_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 shared cores: threads only thrash
    return subprocess.run(
        [sys.executable, "-m", "hm_torch", kind, "--spec", str(spec_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


TRAIN_INPUTS = {"prepared": "work/prepared", "features": "work/features/vgattr5050"}


def _train_params(**extra: Any) -> dict[str, Any]:
    return {**SMOKE, **extra}


@pytest.mark.slow
@pytest.mark.parametrize("letter", ["U", "O", "V", "X", "D"])
def test_train_stage_writes_predictions(data_root: Path, letter: str) -> None:
    result = _run(data_root, "train", f"train-{letter}", TRAIN_INPUTS, _train_params(), letter)
    assert result.returncode == 0, result.stderr
    out = data_root / "work" / ".attempts" / f"train-{letter}"
    with open(out / "predictions" / "test_seen.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [f"3{i:04d}" for i in range(6)]
    assert all(0.0 <= float(r["proba"]) <= 1.0 for r in rows)
    assert (out / "model.safetensors").is_file() and (out / "vocab.txt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("letter", ["O", "V", "X"])
def test_pretrain_output_feeds_fine_tuning(data_root: Path, letter: str) -> None:
    params = {**SMOKE, "itm": letter == "O", "object_tags": letter == "O"}
    result = _run(data_root, "pretrain", f"pretrain-{letter}", TRAIN_INPUTS, params, letter)
    assert result.returncode == 0, result.stderr
    pre = data_root / "work" / ".attempts" / f"pretrain-{letter}"
    meta = native_metadata(pre / "model.safetensors")
    assert meta["model"].endswith("ForPretraining")
    assert (pre / "vocab.txt").is_file() and not (pre / "checkpoint").exists()

    inputs = {**TRAIN_INPUTS, "pretrained": f"work/.attempts/pretrain-{letter}"}
    tags = {"object_tags": True} if letter == "O" else {}
    params = _train_params(**tags)
    result = _run(data_root, "train", f"train-{letter}-pre", inputs, params, letter)
    assert result.returncode == 0, result.stderr
    assert (data_root / "work" / ".attempts" / f"train-{letter}-pre" / "metrics.json").is_file()


def test_full_profile_without_weights_is_a_data_error(data_root: Path) -> None:
    params = _train_params(size="large", checkpoint="uniter-large.pt", vocab="vocab.txt")
    result = _run(data_root, "train", "train-U-full", TRAIN_INPUTS, params, "U")
    assert result.returncode == 3
    assert "BERT vocabulary 'vocab.txt' is not among the weight files the recipe gives" in " ".join(
        result.stderr.split()
    )
    given = {
        "weights:vocab.txt": "weights/vocab.txt",
        "weights:uniter-large.pt": "weights/uniter-large.pt",
    }
    result = _run(data_root, "train", "train-U-full2", {**TRAIN_INPUTS, **given}, params, "U")
    assert result.returncode == 3  # given, but not on disk: named, with where to get it
    assert f"{data_root / 'weights/vocab.txt'}: BERT vocabulary not found" in result.stderr


def test_unknown_model_param_is_named(data_root: Path) -> None:
    result = _run(data_root, "train", "train-U-bad", TRAIN_INPUTS, _train_params(box=3), "U")
    assert result.returncode == 2 and "unknown model param(s) ['box']" in result.stderr


@pytest.mark.slow
def test_x_pretrain_starts_from_a_released_lxmert_file(data_root: Path) -> None:
    """The full-profile path of X at a small width: `Epoch18_LXRT.pth` laid out as released
    (`module.bert.*` + the pre-training and answer heads) and a BERT vocab.txt under weights/."""
    import torch
    import transformers

    weights = data_root / "weights"
    (weights / "lxr").mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (weights / "vocab.txt").write_text("\n".join(specials + WORDS) + "\n")
    hf = transformers.LxmertForPreTraining(
        transformers.LxmertConfig(
            vocab_size=100,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            l_layers=3,
            x_layers=1,
            r_layers=2,
            visual_feat_dim=DIM,
        )
    )
    state = {
        "module." + ("bert." + k.removeprefix("lxmert.") if k.startswith("lxmert.") else k): v
        for k, v in hf.state_dict().items()
    }
    torch.save(state, weights / "lxr" / "Epoch18_LXRT.pth")
    params = {
        **SMOKE,
        "checkpoint": "lxr/Epoch18_LXRT.pth",
        "vocab": "vocab.txt",
        "l_layers": 3,
        "x_layers": 1,
        "r_layers": 2,
        "itm": False,
    }
    given = ("lxr/Epoch18_LXRT.pth", "vocab.txt")  # the recipe's weights list
    inputs = {**TRAIN_INPUTS, **{f"weights:{f}": f"weights/{f}" for f in given}}
    result = _run(data_root, "pretrain", "pretrain-X-released", inputs, params, "X")
    assert result.returncode == 0, result.stderr
    log = " ".join(result.stderr.split())
    backbone = sum(k.startswith("module.bert.") for k in state)
    # + BERT's `cls` heads (5 masked-word, 2 matching; the decoder is tied to the embeddings)
    assert f"{backbone + 7} tensors loaded (lxmert format)" in log
    assert "VQA/GQA answer head, dropped as vilio's loadpre does" in log
    assert "vilio's MLM-only task pre-training does not use" in log
    out = data_root / "work" / ".attempts" / "pretrain-X-released"
    assert (out / "vocab.txt").read_text() == (weights / "vocab.txt").read_text()

    bad = {**params, "l_layers": 2}  # the file has 3 language layers: named, not skipped
    result = _run(data_root, "pretrain", "pretrain-X-bad", inputs, bad, "X")
    assert result.returncode == 3
    assert "bert.encoder.layer.2." in result.stderr and "unexpected" in result.stderr


def test_a_size_the_model_was_not_released_at_is_a_spec_error(data_root: Path) -> None:
    params = _train_params(size="large")
    result = _run(data_root, "train", "train-X-large", TRAIN_INPUTS, params, "X")
    assert result.returncode == 2
    assert "model X: LXMERT was released at BERT-base width only" in result.stderr
    result = _run(data_root, "train", "train-D-bad", TRAIN_INPUTS, _train_params(box=1), "D")
    assert result.returncode == 2 and "unknown model param(s) ['box']" in result.stderr
    assert "global_token" in result.stderr  # D's own params are listed among the valid ones
