"""Seed averaging: the mean probability of several runs of one model, joined by meme id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import atomic_write_json
from hm_shared.predictions import Predictions, join_by_id, read_predictions, write_predictions
from hm_shared.spec import StageSpec

RUN_PREFIX = "run:"


def average_predictions(preds: Sequence[Predictions], threshold: float = 0.5) -> Predictions:
    """Mean probability per meme over `preds` (joined by id); label = mean >= `threshold`.

    >>> a = Predictions(("1", "2"), [0.2, 0.9], [0, 1])
    >>> b = Predictions(("2", "1"), [0.5, 0.6], [1, 1])
    >>> avg = average_predictions([a, b])
    >>> avg.ids.tolist(), avg.proba.tolist(), avg.label.tolist()
    (['1', '2'], [0.4, 0.7], [0, 1])
    """
    if not preds:
        raise ValueError("average_predictions needs at least one Predictions")
    ids, matrix = join_by_id(preds)  # (n, k)
    mean = np.clip(matrix.mean(axis=1), 0.0, 1.0)  # clip: float rounding must not leave [0, 1]
    source = preds[0].source if len(preds) == 1 else f"mean of {len(preds)} runs"
    return Predictions(ids, mean, (mean >= threshold).astype(np.int64), source=source)


def _run_inputs(spec: StageSpec) -> dict[str, Path]:
    bad = [name for name in spec.inputs if not name.startswith(RUN_PREFIX)]
    if bad:
        raise SpecError(
            f"stage {spec.stage}: unexpected inputs {bad}; an average stage takes only "
            "'run:<run>:<fit>' inputs"
        )
    if not spec.inputs:
        raise SpecError(f"stage {spec.stage}: no 'run:<run>:<fit>' inputs to average")
    return {name: spec.path(name) for name in sorted(spec.inputs)}


def average_stage(spec: StageSpec) -> None:
    """Average every split found under the runs' `predictions/`; write `<split>.csv` + average.json.

    A split is averaged over the runs that predicted it (train fits give dev_seen, traindev fits
    the test splits). `params.threshold` (default 0.5) sets the labels.
    """
    threshold = float(spec.params.get("threshold", 0.5))
    by_split: dict[str, dict[str, Path]] = {}
    for name, run_dir in _run_inputs(spec).items():
        pred_dir = run_dir / "predictions"
        files = sorted(pred_dir.glob("[!.]*.csv")) if pred_dir.is_dir() else []
        if not files:
            raise HmDataError(
                f"no predictions/<split>.csv in the output of {name}; expected the train stage "
                "to write at least one",
                pred_dir,
            )
        for path in files:
            by_split.setdefault(path.stem, {})[name] = path
    report = {"threshold": threshold, "splits": {}}
    for split, files in sorted(by_split.items()):
        averaged = average_predictions([read_predictions(p) for p in files.values()], threshold)
        write_predictions(spec.output_dir / f"{split}.csv", averaged)
        report["splits"][split] = {"runs": list(files), "memes": len(averaged)}
    atomic_write_json(spec.output_dir / "average.json", report)
