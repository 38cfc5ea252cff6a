"""The training engine: schedule, groups, determinism, resume equality, SWA, early stopping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from hm_shared.errors import HmDataError, SpecError
from hm_torch.engine import (
    TrainConfig,
    Trainer,
    _lr_lambda,
    evaluate,
    param_groups,
    predict_proba,
    save_weights,
)


class ToyDataset(Dataset):
    """Linearly separable 8-d points; about a quarter hateful."""

    def __init__(self, n: int, seed: int, unlabelled: bool = False) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = (self.x[:, 0] + 0.5 * self.x[:, 1] > 0.6).long()
        self.unlabelled = unlabelled

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"x": self.x[index], "label": -1 if self.unlabelled else int(self.y[index])}

    def labels(self) -> np.ndarray:
        return np.full(len(self), -1) if self.unlabelled else self.y.numpy()


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(8, 16)
        self.LayerNorm = nn.LayerNorm(16)
        self.dropout = nn.Dropout(0.3)  # draws from the global RNG: resume must restore it
        self.classifier = nn.Linear(16, 2)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.dropout(torch.relu(self.LayerNorm(self.encoder(batch["x"]))))
        return self.classifier(hidden)  # (B, 2)


def toy_model(seed: int = 0) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel()


BASE = {
    "epochs": 3,
    "batch_size": 8,
    "lr": 3e-2,
    "log_every": 1,
    "checkpoint_every": 2,
    "eval_every": 5,
    "seed": 7,
}


class Killed(Exception):
    pass


def _fit(work: Path, config: TrainConfig, kill_at: int | None = None) -> nn.Module:
    def on_checkpoint(step: int) -> None:
        if kill_at is not None and step >= kill_at:
            raise Killed(step)

    trainer = Trainer(
        toy_model(), config, default_collate, work_dir=work, on_checkpoint=on_checkpoint
    )
    return trainer.fit(ToyDataset(100, seed=1), ToyDataset(40, seed=2))


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)


def test_lr_schedule_warms_up_then_decays_linearly() -> None:
    factor = _lr_lambda(total=100, warmup_steps=10, schedule="linear")
    rising = [factor(s) for s in range(10)]
    assert rising == sorted(rising) and rising[-1] < 1.0
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0)
    cosine = _lr_lambda(total=100, warmup_steps=0, schedule="cosine")
    assert cosine(50) == pytest.approx(0.5)
    constant = _lr_lambda(total=100, warmup_steps=0, schedule="constant")
    assert {constant(s) for s in (0, 50, 99)} == {1.0}  # Hate-CLIPper: AdamW at a fixed lr


def test_param_groups_exclude_bias_and_layernorm_from_decay() -> None:
    model = toy_model()
    groups = param_groups(model, lr=1e-3, weight_decay=0.1, head_lr_mult=500.0)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: g for g in groups for p in g["params"]}
    assert by_name["encoder.weight"]["weight_decay"] == 0.1
    assert by_name["encoder.bias"]["weight_decay"] == 0.0
    assert by_name["LayerNorm.weight"]["weight_decay"] == 0.0
    assert by_name["classifier.weight"]["weight_decay"] == 0.1
    assert by_name["encoder.weight"]["lr"] == 1e-3  # backbone (upstream --reg test)
    assert by_name["classifier.weight"]["lr"] == pytest.approx(0.5)
    assert len(by_name) == len(list(model.parameters()))


def test_training_is_deterministic_and_learns(tmp_path: Path) -> None:
    config = TrainConfig(**BASE)
    first = _fit(tmp_path / "a", config)
    second = _fit(tmp_path / "b", config)
    _assert_same_weights(first, second)
    scores = evaluate(first, ToyDataset(40, seed=2), default_collate)
    assert scores["dev_auroc"] > 0.9
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3 * 13 and {"step", "epoch", "loss", "lr"} <= steps[0].keys()
    assert [r["step"] for r in log if "dev_auroc" in r] == [5, 10, 13, 15, 20, 25, 26, 30, 35, 39]


RESUME_CASES = {
    "plain": {},
    "grad_accum": {"grad_accum": 3, "checkpoint_every": 1},
    "swa": {"swa": True, "swa_start": 0.3},
    "early_stopping": {"early_stopping": 1, "lr": 0.2},
    "balanced_sampler": {"balance": "sampler"},
    "balanced_loss": {"balance": "loss", "loss_reduction": "sum"},
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
@pytest.mark.parametrize("kill_at", [3, 13])  # mid-epoch; at the first epoch end
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, case: str, kill_at: int) -> None:
    config = TrainConfig(**{**BASE, **RESUME_CASES[case]})
    whole = _fit(tmp_path / "whole", config)

    work = tmp_path / "killed"
    with pytest.raises(Killed):
        _fit(work, config, kill_at=kill_at)
    assert (work / "checkpoint" / "last.pt").is_file()
    resumed = _fit(work, config)

    _assert_same_weights(whole, resumed)
    assert (work / "log.jsonl").read_text() == (tmp_path / "whole" / "log.jsonl").read_text()


def test_checkpoint_of_other_params_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        _fit(tmp_path, TrainConfig(**BASE), kill_at=2)
    with pytest.raises(HmDataError, match=r"last\.pt.*other train params"):
        _fit(tmp_path, TrainConfig(**{**BASE, "lr": 0.5}))


def test_finished_fit_reloads_and_finish_deletes_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig(**BASE)
    first = _fit(tmp_path, config)
    again = _fit(tmp_path, config)  # a stage killed after training: no step is redone
    _assert_same_weights(first, again)
    trainer = Trainer(toy_model(), config, default_collate, work_dir=tmp_path)
    trainer.finish()
    assert not (tmp_path / "checkpoint").exists()


def test_swa_returns_the_average_of_the_late_weights(tmp_path: Path) -> None:
    config = TrainConfig(**{**BASE, "swa": True, "swa_start": 0.5})
    final = _fit(tmp_path, config)
    plain = _fit(tmp_path / "plain", TrainConfig(**BASE))
    assert isinstance(final, ToyModel)
    diff = (final.encoder.weight - plain.encoder.weight).abs().max().item()
    assert diff > 1e-4  # averaged weights differ from the last iterate of a plain run


@pytest.mark.parametrize("every", [1, 5])
def test_swa_averages_every_nth_update_after_the_start(tmp_path: Path, every: int) -> None:
    config = TrainConfig(
        **{**BASE, "swa": True, "swa_start": 0.5, "swa_every": every, "checkpoint_every": 1}
    )
    seen: dict[int, Tensor] = {}
    trainer = Trainer(toy_model(), config, default_collate, work_dir=tmp_path)
    trainer.on_checkpoint = lambda step: seen.__setitem__(
        step, trainer.model.encoder.weight.detach().clone()
    )
    final = trainer.fit(ToyDataset(100, seed=1), ToyDataset(40, seed=2))
    start = int(0.5 * 39)  # 3 epochs × 13 updates
    averaged = [seen[s] for s in range(start + 1, 40) if (s - start) % every == 0]
    assert len(averaged) == (20 if every == 1 else 4)
    torch.testing.assert_close(final.encoder.weight, torch.stack(averaged).mean(0))


def test_early_stopping_keeps_the_best_weights(tmp_path: Path) -> None:
    config = TrainConfig(**{**BASE, "epochs": 12, "early_stopping": 2, "lr": 0.3})
    final = _fit(tmp_path, config)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    epoch_evals = [r for r in log if "dev_loss" in r and r["step"] % 13 == 0]
    losses = [r["dev_loss"] for r in epoch_evals]
    best = min(losses)
    assert len(epoch_evals) < 12  # stopped early
    assert losses.index(best) == len(losses) - 3  # two evaluations without improvement
    scores = evaluate(final, ToyDataset(40, seed=2), default_collate)
    assert scores["dev_loss"] == pytest.approx(best, rel=1e-5)


def test_early_stopping_on_dev_auroc_keeps_the_best_auroc_weights(tmp_path: Path) -> None:
    config = TrainConfig(
        **{**BASE, "epochs": 8, "eval_every": 0, "lr": 0.3, "early_stopping": 8},
        early_stopping_metric="dev_auroc",
    )
    trainer = Trainer(toy_model(), config, default_collate, work_dir=tmp_path)
    final = trainer.fit(ToyDataset(100, seed=1), ToyDataset(40, seed=2))
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    aurocs = [r["dev_auroc"] for r in log if "dev_auroc" in r]
    assert len(aurocs) == 8  # patience 8: every epoch ran
    best = max(aurocs)
    assert trainer.best_epoch == aurocs.index(best) + 1  # the first epoch that reached it
    scores = evaluate(final, ToyDataset(40, seed=2), default_collate)
    assert scores["dev_auroc"] == pytest.approx(best)


def test_predict_proba_is_softmax_in_dataset_order(tmp_path: Path) -> None:
    model = toy_model().eval()
    data = ToyDataset(13, seed=4, unlabelled=True)
    proba = predict_proba(model, data, default_collate, batch_size=5)
    with torch.no_grad():
        expected = torch.softmax(model({"x": data.x}), dim=-1)[:, 1].double().numpy()
    torch.testing.assert_close(torch.from_numpy(proba), torch.from_numpy(expected))
    assert proba.shape == (13,) and ((proba >= 0) & (proba <= 1)).all()


def test_save_weights_writes_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = toy_model()
    save_weights(model, tmp_path / "model.safetensors")
    loaded = load_file(tmp_path / "model.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"swa": True, "early_stopping": 2}, "exclude each other"),
        ({"warmup": 1.5}, "warmup and swa_start"),
        ({"grad_accum": 0}, "grad_accum must be >= 1"),
    ],
)
def test_bad_config_is_a_spec_error(params: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        TrainConfig(**params)


def test_balancing_needs_both_classes(tmp_path: Path) -> None:
    data = ToyDataset(20, seed=1)
    data.y[:] = 0
    trainer = Trainer(
        toy_model(), TrainConfig(**{**BASE, "balance": "loss"}), default_collate, work_dir=tmp_path
    )
    with pytest.raises(HmDataError, match=r"both classes.*\[20, 0\]"):
        trainer.fit(data)
