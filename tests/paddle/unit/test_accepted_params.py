"""The params table hm_paddle publishes for the orchestrator's plan-time check is the one its
train stage enforces (`check_params`)."""

from __future__ import annotations

import pytest

from hm_paddle.accepted import PUBLISHED, accepted_params, published_text
from hm_paddle.train import check_params
from hm_shared.errors import SpecError
from hm_shared.spec import StageSpec


def test_published_table_is_current() -> None:
    assert PUBLISHED.read_text() == published_text(), (
        f"{PUBLISHED} is stale: run `python -m hm_paddle.accepted --write` in the paddle venv"
    )


def _spec(params: dict) -> StageSpec:
    return StageSpec(
        stage="train/ES/ES1/train",
        kind="train",
        env="paddle",
        data_root="/d",
        output="o",
        inputs={},
        params=params,
        profile="smoke",
        device="cpu",
    )


def test_the_stage_accepts_the_table_and_refuses_the_rest() -> None:
    (names,) = accepted_params()["train"].values()
    check_params(_spec(dict.fromkeys(names, 1)))
    assert "warmup_step" not in names
    with pytest.raises(SpecError, match="warmup_step"):
        check_params(_spec({"warmup_step": 1}))
