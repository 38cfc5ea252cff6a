"""AUROC, accuracy and the accuracy-optimal threshold: thin wrappers over scikit-learn.

Inputs are validated up front: labels 0/1 with both classes present, scores finite, same length.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score, roc_curve

from hm_shared.errors import HmDataError


def _check(y: ArrayLike, p: ArrayLike, *, both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y)
    p_arr = np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1 or len(y_arr) != len(p_arr):
        raise HmDataError(
            f"expected 1-d labels and scores of one length, got shapes {y_arr.shape} and "
            f"{p_arr.shape}"
        )
    if len(y_arr) == 0:
        raise HmDataError("expected at least one labelled meme, got none")
    if not np.isin(y_arr, (0, 1)).all():
        raise HmDataError(f"expected labels 0 or 1, got values {np.unique(y_arr).tolist()}")
    if not np.isfinite(p_arr).all():
        raise HmDataError("expected finite scores, got NaN or infinity")
    if both_classes and len(np.unique(y_arr)) < 2:
        raise HmDataError(
            f"labels contain only class {int(y_arr[0])}; AUROC and the threshold need both "
            "hateful (1) and not hateful (0) memes"
        )
    return y_arr.astype(np.int64), p_arr


def auroc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve of scores `p` (float[n]) for labels `y` (int[n], 0/1).

    >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y_arr, p_arr = _check(y, p, both_classes=True)
    return float(roc_auc_score(y_arr, p_arr))


def accuracy(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> float:
    """Share of memes where `p >= threshold` equals the label.

    >>> accuracy([0, 0, 1, 1], [0.1, 0.6, 0.35, 0.8], threshold=0.5)
    0.5
    """
    y_arr, p_arr = _check(y, p, both_classes=False)
    return float(np.mean((p_arr >= threshold) == y_arr))


def best_threshold(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Accuracy-optimal threshold (label = `p >= threshold`) and the accuracy it gives.

    Accuracy at each ROC point is (tpr·P + (1 − fpr)·N) / (P + N) with the real class counts P, N
    (upstream hard-coded 250/250). Ties go to the highest threshold. When predicting every meme
    negative is best, the threshold is the next float above max(p).

    >>> best_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    (0.8, 0.75)
    """
    y_arr, p_arr = _check(y, p, both_classes=True)
    fpr, tpr, thresholds = roc_curve(y_arr, p_arr, drop_intermediate=False)
    positives = int(y_arr.sum())
    negatives = len(y_arr) - positives
    acc = (tpr * positives + (1.0 - fpr) * negatives) / len(y_arr)
    best = int(np.argmax(acc))
    threshold = float(thresholds[best])
    if not np.isfinite(threshold):  # roc_curve's first point: nothing predicted positive
        threshold = float(np.nextafter(p_arr.max(), np.inf))
    return threshold, float(acc[best])
