"""The recipe params each torch stage accepts, published for the orchestrator's plan-time check.

The orchestrator must not import torch, so the table is a file, `accepted_params.json` beside
this module: `{kind: {model letter: [param, …]}}`. A test keeps it equal to what the stages
accept; after changing a config, rewrite it with `python -m hm_torch.accepted --write`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from hm_shared.accepted import FILE_NAME, main, table_text
from hm_shared.spec import TRAIN_STAGE_PARAMS
from hm_torch.clip_embed import EmbedConfig
from hm_torch.engine import TrainConfig
from hm_torch.models import MODELS, PRETRAINERS
from hm_torch.models.baseline import BaselineConfig
from hm_torch.models.hateclipper import HateClipperConfig
from hm_torch.single_stream import RegionModelParams, _family_param_names

PUBLISHED = Path(__file__).with_name(FILE_NAME)


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def model_params(letter: str) -> set[str]:
    """The params a model's own config reads (besides the engine's and the stage's)."""
    if letter == "B":
        return _names(BaselineConfig)
    if letter == "C":
        return _names(HateClipperConfig)
    return _names(RegionModelParams) | _family_param_names(letter)


def accepted_params() -> dict[str, dict[str, list[str]]]:
    common = _names(TrainConfig) | set(TRAIN_STAGE_PARAMS)
    return {
        "train": {m: sorted(common | model_params(m)) for m in sorted(MODELS)},
        "pretrain": {m: sorted(common | model_params(m)) for m in sorted(PRETRAINERS)},
        "embed": {"*": sorted(_names(EmbedConfig))},
    }


def published_text() -> str:
    return table_text(accepted_params())


if __name__ == "__main__":
    main(PUBLISHED, accepted_params, sys.argv[1:])
