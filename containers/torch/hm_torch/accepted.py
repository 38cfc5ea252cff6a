"""The recipe params each torch stage accepts, published for the orchestrator's plan-time check.

The orchestrator must not import torch, so the table is a file, `accepted_params.json` beside
this module: `{kind: {model letter: {"model": [param, …], "engine": [setting, …]}}}` (the
engine's are `TrainConfig`'s fields). A test keeps it equal to what the stages accept; after
changing a config, rewrite it with `python -m hm_torch.accepted --write`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hm_shared.accepted import FILE_NAME, Table, accepted, main, table_text
from hm_torch.clip_embed import EmbedConfig
from hm_torch.engine import ENGINE_PARAMS
from hm_torch.models import MODELS
from hm_torch.models.family import field_names

PUBLISHED = Path(__file__).with_name(FILE_NAME)


def accepted_params() -> Table:
    models = sorted(MODELS.items())
    return {
        "train": {m: accepted(e.params, ENGINE_PARAMS) for m, e in models},
        "pretrain": {m: accepted(e.params, ENGINE_PARAMS) for m, e in models if e.pretrain},
        "embed": {"*": accepted(field_names(EmbedConfig))},  # no training engine
    }


def published_text() -> str:
    return table_text(accepted_params())


if __name__ == "__main__":
    main(PUBLISHED, accepted_params, sys.argv[1:])
