import numpy as np
import pytest
from numpy.testing import assert_allclose

from hm_shared.errors import HmDataError
from hm_shared.metrics import accuracy, auroc, best_threshold


def test_auroc_by_hand() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4, 0.35: pairs won 0.35>0.1, 0.35=0.35 (half),
    # 0.8>all three -> (1 + 0.5 + 3) / 6 = 0.75
    assert_allclose(auroc([0, 0, 0, 1, 1], [0.1, 0.4, 0.35, 0.35, 0.8]), 0.75)


def test_accuracy_uses_greater_or_equal() -> None:
    # p >= 0.4 -> [0, 1, 1, 1]; labels [0, 0, 1, 1] -> 3 of 4 right
    assert accuracy([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9], threshold=0.4) == 0.75


def test_best_threshold_uses_real_class_counts() -> None:
    # 4 negatives, 2 positives. Candidate thresholds and accuracy (p >= t):
    #   t=0.9: TP 1, FP 0 -> (1 + 4) / 6 = 0.8333 ; balanced 250/250 weighting: (0.5 + 1) / 2 = 0.75
    #   t=0.6: TP 1, FP 1 -> (1 + 3) / 6 = 0.6667
    #   t=0.5: TP 2, FP 1 -> (2 + 3) / 6 = 0.8333 ; balanced: (1 + 0.75) / 2 = 0.875
    # Real counts tie 0.9 and 0.5 and keep the higher threshold; 250/250 would pick 0.5.
    y = [0, 0, 0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.5, 0.9]
    threshold, acc = best_threshold(y, p)
    assert threshold == 0.9
    assert_allclose(acc, 5 / 6)
    assert_allclose(accuracy(y, p, threshold), acc)


def test_best_threshold_all_negative_is_above_every_score() -> None:
    # Only "everything negative" gets 2 of 3 right, so the threshold must exceed max(p) = 1.0.
    y, p = [1, 0, 0], [0.1, 0.5, 1.0]
    threshold, acc = best_threshold(y, p)
    assert threshold > 1.0 and np.isfinite(threshold)
    assert_allclose(acc, 2 / 3)
    assert_allclose(accuracy(y, p, threshold), 2 / 3)


def test_best_threshold_matches_a_brute_force_scan() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1).round(2)  # many ties
    threshold, acc = best_threshold(y, p)
    scan = max(accuracy(y, p, t) for t in np.unique(p))
    assert_allclose(acc, scan)
    assert_allclose(accuracy(y, p, threshold), acc)


@pytest.mark.parametrize("func", [auroc, best_threshold])
def test_one_class_labels_are_a_clear_error(func) -> None:
    with pytest.raises(HmDataError, match="only class 1; AUROC and the threshold need both"):
        func([1, 1, 1], [0.2, 0.5, 0.9])


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 2], [0.1, 0.2], r"expected labels 0 or 1, got values \[0, 2\]"),
        ([0, 1], [0.1], "expected 1-d labels and scores of one length"),
        ([0, 1], [0.1, float("nan")], "expected finite scores"),
        ([], [], "expected at least one labelled meme"),
    ],
)
def test_bad_inputs(y, p, message: str) -> None:
    with pytest.raises(HmDataError, match=message):
        auroc(y, p)
