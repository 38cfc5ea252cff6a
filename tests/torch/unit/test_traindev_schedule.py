"""A traindev fit whose recipe fixes its schedule by the train fit (input `train_fit`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spec_helpers import make_spec

from hm_shared.errors import HmDataError
from hm_shared.spec import StageSpec
from hm_torch.engine import TrainConfig
from hm_torch.train import epochs_of_train_fit


def _spec(root: Path, inputs: dict[str, str]) -> StageSpec:
    return make_spec("train/C/C1/traindev", root, output="work/runs/C/C1/traindev", inputs=inputs)


def test_traindev_trains_the_epochs_the_train_fit_kept(tmp_path: Path) -> None:
    fit = tmp_path / "work/runs/C/C1/train"
    fit.mkdir(parents=True)
    (fit / "metrics.json").write_text(json.dumps({"best_epoch": 7, "epochs": 20}))
    config = TrainConfig(epochs=20)
    spec = _spec(tmp_path, {"train_fit": "work/runs/C/C1/train"})
    assert epochs_of_train_fit(spec, config).epochs == 7
    assert epochs_of_train_fit(_spec(tmp_path, {}), config).epochs == 20  # other models


@pytest.mark.parametrize("metrics", ['{"epochs": 20}', '{"best_epoch": 0}', "not json"])
def test_an_unusable_train_fit_names_its_metrics_file(tmp_path: Path, metrics: str) -> None:
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "metrics.json").write_text(metrics)
    with pytest.raises(HmDataError, match=r"best_epoch") as caught:
        epochs_of_train_fit(_spec(tmp_path, {"train_fit": "fit"}), TrainConfig())
    assert "fit/metrics.json" in str(caught.value)
