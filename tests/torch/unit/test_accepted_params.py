"""The params table hm_torch publishes for the orchestrator's plan-time check is the one its
stages enforce: the committed file equals what the code accepts, and a name outside it is
refused by the stage itself."""

from __future__ import annotations

import pytest

from hm_shared.accepted import Table
from hm_shared.errors import SpecError
from hm_torch.accepted import PUBLISHED, accepted_params, published_text
from hm_torch.clip_embed import EmbedConfig
from hm_torch.engine import ENGINE_PARAMS
from hm_torch.models import lxmert
from hm_torch.models.baseline import BaselineConfig
from hm_torch.models.hateclipper import HateClipperConfig
from hm_torch.single_stream import RegionModelParams


def test_published_table_is_current() -> None:
    assert PUBLISHED.read_text() == published_text(), (
        f"{PUBLISHED} is stale: run `python -m hm_torch.accepted --write` in the torch venv"
    )


def test_table_covers_every_model_and_the_engine() -> None:
    table = accepted_params()
    assert sorted(table["train"]) == ["B", "C", "D", "O", "U", "V", "X"]
    assert sorted(table["pretrain"]) == ["O", "V", "X"]
    embed = table["embed"]["*"]
    assert "commit_every_s" in embed["model"] and embed["engine"] == []  # it trains nothing
    for kind in ("train", "pretrain"):
        for letter, entry in table[kind].items():
            assert entry["engine"] == sorted(ENGINE_PARAMS), letter  # one engine for all
            assert {"lr", "epochs"} <= set(entry["engine"]), letter
            assert not set(entry["model"]) & set(entry["engine"]), letter
            names = {*entry["model"], *entry["engine"]}
            assert not {"seed", "model", "fit", "predict"} & names, letter  # the spec's `run`
    train = {letter: entry["model"] for letter, entry in table["train"].items()}
    assert "fusion_dim" in train["B"] and "x_layers" in train["X"]
    assert "x_layers" not in train["U"]
    assert {"fusion", "map_dim"} <= set(train["C"])
    assert "early_stopping_metric" in table["train"]["C"]["engine"]


def _model(table: Table, kind: str, letter: str) -> list[str]:
    return table[kind][letter]["model"]


def test_what_the_table_leaves_out_the_stages_refuse() -> None:
    table = accepted_params()
    assert "fusion_size" not in _model(table, "train", "B")
    with pytest.raises(SpecError, match="fusion_size"):
        BaselineConfig.from_params({"fusion_size": 3}, "stage train/B")
    assert "box" not in _model(table, "train", "X")
    with pytest.raises(SpecError, match="box"):
        RegionModelParams.from_params({"box": 1}, "stage train/X", lxmert.FAMILY.model_params)
    assert "fusion_kind" not in _model(table, "train", "C")
    with pytest.raises(SpecError, match="fusion_kind"):
        HateClipperConfig.from_params({"fusion_kind": "align"}, "stage train/C")
    assert "model_path" not in _model(table, "embed", "*")
    with pytest.raises(SpecError, match="model_path"):
        EmbedConfig.from_params({"model_path": "x"}, "stage embed/clip")
