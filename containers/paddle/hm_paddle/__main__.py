"""Stages of the paddle environment: `python -m hm_paddle {train,predict} --spec FILE`."""

from __future__ import annotations

import sys

from hm_shared.spec import StageSpec
from hm_shared.stage_main import run_verb


def _train(spec: StageSpec) -> None:
    from hm_paddle.train import train_stage  # paddle imports only once the spec parsed

    train_stage(spec)


def _predict(spec: StageSpec) -> None:
    from hm_paddle.train import predict_stage

    predict_stage(spec)


VERBS = {"train": _train, "predict": _predict}

if __name__ == "__main__":
    sys.exit(run_verb("hm_paddle", VERBS))
