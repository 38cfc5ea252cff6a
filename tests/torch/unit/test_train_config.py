"""The engine's settings of a train stage come from the spec's `engine` part and the run's seed,
never from the model's params."""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_helpers import make_spec

from hm_shared.errors import SpecError
from hm_shared.spec import StageSpec
from hm_torch.train import train_config

RUN = {"model": "U", "run": "U36", "seed": 36, "fit": "train"}


def _spec(tmp_path: Path, **fields: object) -> StageSpec:
    return make_spec("train/U/U36/train", tmp_path, run=RUN, **fields)


def test_the_engine_part_and_the_run_seed_make_the_config(tmp_path: Path) -> None:
    config = train_config(_spec(tmp_path, engine={"lr": 3e-5, "epochs": 4}), {"epochs": 9})
    assert (config.lr, config.epochs, config.seed) == (3e-5, 4, 36)  # the recipe over defaults
    # a name among the model's params is the model's: the engine keeps its default
    assert train_config(_spec(tmp_path, params={"lr": 1.0})).lr == train_config(_spec(tmp_path)).lr


def test_the_recipe_table_splits_as_the_orchestrator_splits_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, recipe={"size": "tiny", "lr": 2e-4, "batch_size": 4})
    assert spec.params == {"size": "tiny"} and spec.engine == {"lr": 2e-4, "batch_size": 4}
    assert train_config(spec).batch_size == 4


@pytest.mark.parametrize("engine", [{"epoch": 3}, {"seed": 1}])
def test_an_unknown_engine_setting_names_the_stage(tmp_path: Path, engine: dict) -> None:
    with pytest.raises(SpecError, match=r"stage train/U/U36/train: bad engine settings"):
        train_config(_spec(tmp_path, engine=engine))
