"""The recipe params the paddle train stage accepts, published for the orchestrator's plan-time
check as `accepted_params.json` beside this module (`{kind: {letter: {"model": [...],
"engine": [...]}}}`: every model letter of this environment is ERNIE-ViL, so they accept the
same params). A test keeps it
equal to what the stage accepts; rewrite it with `python -m hm_paddle.accepted --write`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hm_paddle.train import ENGINE_PARAMS, MODEL_PARAMS, MODELS
from hm_shared.accepted import FILE_NAME, Table, accepted, main, table_text

PUBLISHED = Path(__file__).with_name(FILE_NAME)


def accepted_params() -> Table:
    return {"train": {letter: accepted(MODEL_PARAMS, ENGINE_PARAMS) for letter in sorted(MODELS)}}


def published_text() -> str:
    return table_text(accepted_params())


if __name__ == "__main__":
    main(PUBLISHED, accepted_params, sys.argv[1:])
