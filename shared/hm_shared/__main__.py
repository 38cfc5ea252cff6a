"""Stages that need only hm_shared: `python -m hm_shared <verb> --spec FILE`."""

from __future__ import annotations

import sys

from hm_shared.spec import StageSpec
from hm_shared.stage_main import run_verb


def _prepare(spec: StageSpec) -> None:
    from hm_shared.prepare import prepare_stage

    prepare_stage(spec)


def _average(spec: StageSpec) -> None:
    from hm_shared.average import average_stage

    average_stage(spec)


def _ensemble(spec: StageSpec) -> None:
    from hm_shared.ensemble import ensemble_stage

    ensemble_stage(spec)


def _report(spec: StageSpec) -> None:
    from hm_shared.report import report_stage

    report_stage(spec)


def _intake(spec: StageSpec) -> None:
    from hm_shared.intake import intake_stage

    intake_stage(spec)


def _scores(spec: StageSpec) -> None:
    from hm_shared.scores import scores_stage

    scores_stage(spec)


VERBS = {
    "prepare": _prepare,
    "average": _average,
    "ensemble": _ensemble,
    "report": _report,
    "intake": _intake,
    "scores": _scores,
}

if __name__ == "__main__":
    sys.exit(run_verb("hm_shared", VERBS))
