"""The train and pretrain stages (docs/architecture.md §2.2): run + params → model kit → engine →
predictions, weights, metrics.

Output directory (the attempt dir, `spec.output_dir`):
    predictions/<split>.csv   id,proba,label for every split in run.predict
    model.safetensors         final weights
    log.jsonl                 training log (hm_torch.engine)
    metrics.json              AUROC/accuracy/loss of every labelled predicted split and of valid
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from hm_shared.dataset import read_prepared_split
from hm_shared.errors import HmDataError, SpecError
from hm_shared.fit_outputs import split_metrics, write_split_predictions
from hm_shared.io import atomic_write_json
from hm_shared.spec import StageSpec
from hm_torch.engine import (
    ModelKit,
    TrainConfig,
    Trainer,
    evaluate,
    predict_proba,
    save_weights,
    seed_everything,
)
from hm_torch.models import MODELS
from hm_torch.models.family import ModelEntry

FITS = ("train", "traindev")


def train_config(spec: StageSpec, defaults: Mapping[str, Any] | None = None) -> TrainConfig:
    """The engine's settings: `defaults` under the recipe's (`spec.engine`), the run's seed."""
    try:
        return TrainConfig(**{**(defaults or {}), **spec.engine}, seed=spec.model_run.seed)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"stage {spec.stage}: bad engine settings: {exc}") from exc


def epochs_of_train_fit(spec: StageSpec, config: TrainConfig) -> TrainConfig:
    """The traindev fit of a model whose recipe fixes its schedule by the train fit (input
    `train_fit`): as many epochs as the weights the train fit kept (its `best_epoch`)."""
    if "train_fit" not in spec.inputs:
        return config
    path = spec.path("train_fit") / "metrics.json"
    try:
        best = int(json.loads(path.read_text(encoding="utf-8"))["best_epoch"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HmDataError(
            f"cannot read the train fit's best_epoch (an int, written by its stage): {exc}", path
        ) from exc
    if best < 1:
        raise HmDataError(f"best_epoch is {best}, expected >= 1", path)
    return replace(config, epochs=best)


def stage_device(spec: StageSpec) -> torch.device:
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            f"stage {spec.stage}: spec asks for device cuda but torch sees no GPU "
            "(check CUDA_VISIBLE_DEVICES / the compose device_ids)"
        )
    return torch.device("cuda:0" if spec.device == "cuda" else "cpu")


def device_name(device: torch.device) -> str:
    """What metrics.json and the stage record say the stage ran on."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _entry(spec: StageSpec) -> ModelEntry:
    letter = spec.model_run.model
    if letter not in MODELS:
        raise SpecError(
            f"stage {spec.stage}: model {letter!r} is not a model of hm_torch; valid: "
            f"{sorted(MODELS)}"
        )
    return MODELS[letter]


def train_stage(spec: StageSpec) -> None:
    build = _entry(spec).build
    run = spec.model_run
    if run.fit is None:
        raise SpecError(f"stage {spec.stage}: a train stage's run needs a fit, one of {FITS}")
    fit, predict, valid_split = run.fit, list(run.predict), run.valid
    config = epochs_of_train_fit(spec, train_config(spec))
    device = stage_device(spec)
    prepared = spec.path("prepared")
    train_memes = read_prepared_split(prepared, fit)

    seed_everything(config.seed, device)  # the builder's random init depends on it
    kit = build(spec, spec.params, train_memes)
    valid = kit.dataset(read_prepared_split(prepared, valid_split)) if valid_split else None
    trainer = Trainer(kit.model, config, kit.collate, work_dir=spec.output_dir, device=device)
    final = trainer.fit(kit.dataset(train_memes), valid)
    save_weights(final, spec.output_dir / "model.safetensors")

    metrics: dict[str, Any] = {
        "model": run.model,
        "fit": fit,
        "valid": valid_split,
        "device": device_name(device),
        "epochs": config.epochs,
        "best_epoch": trainer.best_epoch,
    }
    metrics |= predict_splits(spec, kit, final, config, device, predict)
    if valid is not None:
        scores = evaluate(
            final,
            valid,
            kit.collate,
            batch_size=config.eval_batch_size,
            device=device,
            num_workers=config.num_workers,
        )
        metrics.setdefault(valid_split, {}).update(
            {k.removeprefix("dev_"): None if np.isnan(v) else v for k, v in scores.items()}
        )
    atomic_write_json(spec.output_dir / "metrics.json", metrics)
    trainer.finish()


def predict_splits(
    spec: StageSpec,
    kit: ModelKit,
    model: torch.nn.Module,
    config: TrainConfig,
    device: torch.device,
    splits: list[str],
) -> dict[str, Any]:
    """Write predictions/<split>.csv of each split of input `prepared`; returns the metrics
    of the labelled ones."""
    metrics: dict[str, Any] = {}
    for split in splits:
        dataset = kit.dataset(read_prepared_split(spec.path("prepared"), split))
        proba = predict_proba(
            model,
            dataset,
            kit.collate,
            batch_size=config.eval_batch_size,
            device=device,
            num_workers=config.num_workers,
        )
        write_split_predictions(spec.output_dir, split, dataset.ids(), proba)
        scores = split_metrics(dataset.labels(), proba)
        if scores is not None:
            metrics[split] = scores
    return metrics


def load_fit_weights(model: torch.nn.Module, path: Path) -> None:
    """A fit's `model.safetensors` into `model`, every key accounted for both ways."""
    if not path.is_file():
        raise HmDataError("no model.safetensors; expected the weights its train stage saved", path)
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HmDataError(
            f"the weights do not fit the model this recipe builds: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; was the recipe changed after training?",
            path,
        )


def predict_stage(spec: StageSpec) -> None:
    """Score run.predict (input `prepared`: the new memes) with a finished fit (input `fit`).

    The model is built as its train stage built it, from the same params and the same training
    memes (input `run_prepared`), so it has the same tokenizer or fastText vectors; then it
    takes the fit's `model.safetensors`. Nothing is trained.
    """
    build = _entry(spec).build
    config = train_config(spec)
    device = stage_device(spec)
    run = spec.model_run
    if run.fit is None:
        raise SpecError(f"stage {spec.stage}: a predict stage's run names the fit it scores with")
    train_memes = read_prepared_split(spec.path("run_prepared"), run.fit)
    seed_everything(config.seed, device)
    kit = build(spec, spec.params, train_memes)
    load_fit_weights(kit.model, spec.path("fit") / "model.safetensors")
    model = kit.model.to(device)
    metrics = predict_splits(spec, kit, model, config, device, list(run.predict))
    metrics |= {"model": run.model, "device": device_name(device)}
    atomic_write_json(spec.output_dir / "metrics.json", metrics)


def pretrain_stage(spec: StageSpec) -> None:
    pretrain = _entry(spec).pretrain
    if pretrain is None:
        with_one = sorted(letter for letter, entry in MODELS.items() if entry.pretrain)
        raise SpecError(
            f"stage {spec.stage}: model {spec.model_run.model!r} has no task pre-training in "
            f"hm_torch; the models that have one: {with_one}"
        )
    pretrain(spec)


__all__ = ["predict_stage", "pretrain_stage", "stage_device", "train_config", "train_stage"]
