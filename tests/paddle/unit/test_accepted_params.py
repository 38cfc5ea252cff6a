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


def _spec(params: dict, letter: str = "ES") -> StageSpec:
    run = {"model": letter, "run": f"{letter}1", "seed": 1, "fit": "train"}
    return make_spec(f"train/{letter}/{letter}1/train", "/d", output="o", params=params, run=run)


def test_the_stage_accepts_the_table_and_refuses_the_rest() -> None:
    table = accepted_params()["train"]
    assert sorted(table) == ["EL", "ES"] and table["EL"] == table["ES"]
    names = table["ES"]
    check_params(_spec(dict.fromkeys(names, 1)))
    assert "warmup_step" not in names and "seed" not in names  # the seed is the run's
    for name in ("warmup_step", "seed"):
        with pytest.raises(SpecError, match=f"unknown param\\(s\\) \\['{name}'\\]"):
            check_params(_spec({name: 1}))


def test_a_letter_hm_paddle_has_no_model_for_is_refused() -> None:
    refused = r"model 'E' is not a model of hm_paddle; valid: \['EL', 'ES'\]"
    with pytest.raises(SpecError, match=refused):
        check_params(_spec({}, "E"))
