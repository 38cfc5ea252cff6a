"""Model letters → builders, in two explicit dicts (no registry filled by imports).

`MODELS[letter](spec, model_params, train_memes) -> ModelKit` builds what the train stage needs
(`hm_torch.engine.ModelKit`): `model_params` are the spec params that are neither stage keys
(model, run, seed, fit, predict, valid, features, extra_features) nor `TrainConfig` fields; a
builder rejects the ones it does not know. `PRETRAINERS[letter](spec)` runs a task pre-training
stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hm_shared.dataset import Meme
from hm_shared.spec import StageSpec
from hm_torch.engine import ModelKit
from hm_torch.models.baseline import build_baseline
from hm_torch.models.hateclipper import build_hateclipper
from hm_torch.single_stream import (
    build_oscar,
    build_region_model,
    build_uniter,
    build_visualbert,
    pretrain_region_model,
)

Builder = Callable[[StageSpec, dict[str, Any], Sequence[Meme]], ModelKit]
Pretrainer = Callable[[StageSpec], None]

MODELS: dict[str, Builder] = {
    "B": build_baseline,
    "C": build_hateclipper,
    "D": build_region_model("D"),
    "O": build_oscar,
    "U": build_uniter,
    "V": build_visualbert,
    "X": build_region_model("X"),
}

PRETRAINERS: dict[str, Pretrainer] = {
    "O": pretrain_region_model("O"),
    "V": pretrain_region_model("V"),
    "X": pretrain_region_model("X"),
}

__all__ = ["MODELS", "PRETRAINERS", "Builder", "Pretrainer"]
