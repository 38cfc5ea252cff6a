"""The params table hm_paddle publishes for the orchestrator's plan-time check is the one its
train stage enforces (`check_params`)."""

from __future__ import annotations

import pytest
from spec_helpers import make_spec

from hm_paddle.accepted import PUBLISHED, accepted_params, published_text
from hm_paddle.train import check_params
from hm_shared.errors import SpecError
from hm_shared.spec import StageSpec


def test_published_table_is_current() -> None:
    assert PUBLISHED.read_text() == published_text(), (
        f"{PUBLISHED} is stale: run `python -m hm_paddle.accepted --write` in the paddle venv"
    )


def _spec(params: dict, letter: str = "ES", engine: dict | None = None) -> StageSpec:
    run = {"model": letter, "run": f"{letter}1", "seed": 1, "fit": "train"}
    stage = f"train/{letter}/{letter}1/train"
    return make_spec(stage, "/d", output="o", params=params, engine=engine or {}, run=run)


def test_the_stage_accepts_the_table_and_refuses_the_rest() -> None:
    table = accepted_params()["train"]
    assert sorted(table) == ["EL", "ES"] and table["EL"] == table["ES"]
    model, engine = table["ES"]["model"], table["ES"]["engine"]
    assert {"size", "max_regions"} <= set(model) and {"lr", "steps"} <= set(engine)
    assert not set(model) & set(engine)
    check_params(_spec(dict.fromkeys(model, 1), engine=dict.fromkeys(engine, 1)))
    names = {*model, *engine}
    assert "warmup_step" not in names and "seed" not in names  # the seed is the run's
    for name in ("warmup_step", "seed"):
        with pytest.raises(SpecError, match=f"unknown param\\(s\\) \\['{name}'\\]"):
            check_params(_spec({name: 1}))
        with pytest.raises(SpecError, match=f"unknown engine setting\\(s\\) \\['{name}'\\]"):
            check_params(_spec({}, engine={name: 1}))
    with pytest.raises(SpecError, match=r"unknown param\(s\) \['lr'\]"):  # in the wrong part
        check_params(_spec({"lr": 1e-5}))


def test_a_letter_hm_paddle_has_no_model_for_is_refused() -> None:
    refused = r"model 'E' is not a model of hm_paddle; valid: \['EL', 'ES'\]"
    with pytest.raises(SpecError, match=refused):
        check_params(_spec({}, "E"))
