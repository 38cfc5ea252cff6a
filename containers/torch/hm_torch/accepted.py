"""The recipe params each torch stage accepts, published for the orchestrator's plan-time check.

The orchestrator must not import torch, so the table is a file, `accepted_params.json` beside
this module: `{kind: {model letter: [param, …]}}`. A test keeps it equal to what the stages
accept; after changing a config, rewrite it with `python -m hm_torch.accepted --write`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hm_shared.accepted import FILE_NAME, main, table_text
from hm_torch.clip_embed import EmbedConfig
from hm_torch.engine import ENGINE_PARAMS
from hm_torch.models import MODELS
from hm_torch.models.family import field_names

PUBLISHED = Path(__file__).with_name(FILE_NAME)


def accepted_params() -> dict[str, dict[str, list[str]]]:
    common = ENGINE_PARAMS
    return {
        "train": {m: sorted(common | e.params) for m, e in sorted(MODELS.items())},
        "pretrain": {m: sorted(common | e.params) for m, e in sorted(MODELS.items()) if e.pretrain},
        "embed": {"*": sorted(field_names(EmbedConfig))},
    }


def published_text() -> str:
    return table_text(accepted_params())


if __name__ == "__main__":
    main(PUBLISHED, accepted_params, sys.argv[1:])
