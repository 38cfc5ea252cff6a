"""Stages of the torch environment: `python -m hm_torch <verb> --spec FILE`; verbs below."""

from __future__ import annotations

import sys

from hm_shared.spec import StageSpec
from hm_shared.stage_main import run_verb


def _train(spec: StageSpec) -> None:
    from hm_torch.train import train_stage

    train_stage(spec)


def _pretrain(spec: StageSpec) -> None:
    from hm_torch.train import pretrain_stage

    pretrain_stage(spec)


def _predict(spec: StageSpec) -> None:
    from hm_torch.train import predict_stage

    predict_stage(spec)


def _embed(spec: StageSpec) -> None:
    from hm_torch.clip_embed import embed_stage

    embed_stage(spec)


VERBS = {"train": _train, "pretrain": _pretrain, "predict": _predict, "embed": _embed}

if __name__ == "__main__":
    sys.exit(run_verb("hm_torch", VERBS))
