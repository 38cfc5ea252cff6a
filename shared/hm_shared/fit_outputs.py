"""The output contract of every train and predict stage, in any environment
(docs/architecture.md §2.2): `predictions/<split>.csv` per predicted split, and in
`metrics.json` the AUROC and accuracy of each labelled split (labelled: every label known and both
classes present, so AUROC is defined)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hm_shared.metrics import accuracy, auroc
from hm_shared.predictions import Predictions, write_predictions


def labelled(labels: np.ndarray) -> bool:
    """`labels` (int[n], -1 = unknown) can be scored: all known, both classes present.

    >>> labelled(np.array([0, 1, 1])), labelled(np.array([0, -1, 1])), labelled(np.array([1, 1]))
    (True, False, False)
    """
    return bool((labels >= 0).all()) and len(np.unique(labels)) == 2


def write_split_predictions(
    output_dir: Path, split: str, ids: Sequence[str], proba: np.ndarray
) -> None:
    """`<output_dir>/predictions/<split>.csv`: id, proba, label (proba ≥ 0.5, the argmax of the
    two logits)."""
    proba = np.asarray(proba, dtype=np.float64)
    predictions = Predictions(
        np.asarray(ids, dtype=str), proba, (proba >= 0.5).astype(np.int64), source=split
    )
    write_predictions(Path(output_dir) / "predictions" / f"{split}.csv", predictions)


def split_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float] | None:
    """`{"auroc", "accuracy"}` of a labelled split; None for one that cannot be scored."""
    if not labelled(labels):
        return None
    return {"auroc": auroc(labels, proba), "accuracy": accuracy(labels, proba)}


__all__ = ["labelled", "split_metrics", "write_split_predictions"]
