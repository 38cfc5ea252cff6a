import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import roc_auc_score

from hm_shared.ensemble import (
    _fast_auroc,
    apply_ensemble,
    ensemble,
    optimize_weights,
    rank_average,
    simple_average,
    weighted_sum,
)
from hm_shared.errors import HmDataError
from hm_shared.metrics import auroc
from hm_shared.predictions import Predictions

# Two columns over 4 memes, used by the hand computations below.
A = [0.2, 0.4, 0.6, 1.0]
B = [0.5, 0.1, 0.3, 0.9]
M = np.array([A, B]).T  # (4, 2)


def test_simple_average_by_hand() -> None:
    # plain mean: (0.2+0.5)/2, (0.4+0.1)/2, (0.6+0.3)/2, (1.0+0.9)/2
    assert_allclose(simple_average(M), [0.35, 0.25, 0.45, 0.95])
    # weights 3:1 -> 0.75 A + 0.25 B: 0.15+0.125, 0.3+0.025, 0.45+0.075, 0.75+0.225
    assert_allclose(simple_average(M, weights=[3, 1]), [0.275, 0.325, 0.525, 0.975])
    # min-max: A -> (A-0.2)/0.8 = [0, .25, .5, 1]; B -> (B-0.1)/0.8 = [.5, 0, .25, 1]
    # SA = mean: [.25, .125, .375, 1]
    assert_allclose(simple_average(M, normalize=True), [0.25, 0.125, 0.375, 1.0])
    # PA = mean of squares: A² = [0, .0625, .25, 1], B² = [.25, 0, .0625, 1]
    assert_allclose(simple_average(M, power=2, normalize=True), [0.125, 0.03125, 0.15625, 1.0])


def test_constant_column_normalises_to_one_half() -> None:
    # column 2 is constant: 0.5 everywhere after min-max; column 1 -> [0, 1]
    assert_allclose(simple_average([[0.3, 0.7], [0.9, 0.7]], normalize=True), [0.25, 0.75])


def test_rank_average_by_hand() -> None:
    # A ranks 1,2,3,4 -> /4 = [.25, .5, .75, 1]; B (0.5, 0.1, 0.3, 0.9) ranks 3,1,2,4 -> [.75, .25,
    # .5, 1]; mean [.5, .375, .625, 1]
    assert_allclose(rank_average(M), [0.5, 0.375, 0.625, 1.0])
    # ties share the mean rank: [0.3, 0.3, 0.9] -> ranks 1.5, 1.5, 3 -> /3
    assert_allclose(rank_average([[0.3], [0.3], [0.9]]), [0.5, 0.5, 1.0])


def test_bad_weights_are_rejected() -> None:
    with pytest.raises(ValueError, match="expected 2 non-negative weights"):
        simple_average(M, weights=[1, -1])


def test_fast_auroc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    scores = (rng.random(400) + 0.2 * y).round(1)  # heavy ties
    assert_allclose(_fast_auroc(scores, y == 1), roc_auc_score(y, scores), rtol=0, atol=1e-12)


def _columns(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Labels and 4 columns: column 0 strong, the others weak and noisy."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)  # a third hateful, not 50/50
    strengths = [3.0, 0.4, 0.3, 0.2]
    logits = np.stack([s * y + rng.normal(size=n) for s in strengths], axis=1)
    return y, 1 / (1 + np.exp(-logits))  # (n,), (n, 4)


def test_optimised_weights_favour_the_best_column_and_are_deterministic() -> None:
    y, m = _columns()
    w = optimize_weights(m, y)
    assert w.shape == (4,) and (w >= 0).all()
    assert_allclose(w.sum(), 1.0)
    assert int(np.argmax(w)) == 0 and w[0] > 0.5
    assert auroc(y, m @ w) >= max(auroc(y, m[:, i]) for i in range(4))
    assert_array_equal(optimize_weights(m, y), w)


def _preds(ids: np.ndarray, proba: np.ndarray, order: np.ndarray | None = None) -> Predictions:
    order = np.arange(len(ids)) if order is None else order
    return Predictions(ids[order], proba[order], (proba[order] >= 0.5).astype(int))


def _problem(n_models: int, shuffle_second: bool = False):
    y, m = _columns(n=240)
    rng = np.random.default_rng(7)
    ids = np.array([f"{i:05d}" for i in range(len(y))])
    test_ids = np.array([f"9{i:04d}" for i in range(50)])
    test_m = rng.random((50, m.shape[1]))
    names = ["EL", "U", "O", "V"][:n_models]
    dev, tests = {}, {"test_seen": {}, "test_unseen": {}}
    for j, name in enumerate(names):
        order = rng.permutation(len(ids)) if shuffle_second and j == 1 else None
        dev[name] = _preds(ids, m[:, j], order)
        tests["test_seen"][name] = _preds(test_ids, test_m[:, j])
        tests["test_unseen"][name] = _preds(test_ids[:20], test_m[:20, j])
    labels = dict(zip(ids.tolist(), y.tolist(), strict=True))
    return dev, labels, tests, m, y


@pytest.mark.parametrize("n_models", [2, 3, 4])
def test_ensemble_two_rounds(n_models: int) -> None:
    dev, labels, tests, _, y = _problem(n_models)
    result = ensemble(dev, labels, tests)
    best_single = max(result.column_auroc.values())
    assert result.column_auroc["EL"] == best_single
    assert result.dev_auroc >= best_single
    assert [len(r["columns"]) for r in result.rounds] == [n_models, 5]
    assert len(result.rounds[1]["dropped"]) == n_models + 4 - 5
    assert list(result.weights) == result.rounds[1]["columns"]
    assert_allclose(sum(result.weights.values()), 1.0)
    # the threshold labels every split, dev included
    for preds in [result.dev, *result.tests.values()]:
        assert ((preds.proba >= 0) & (preds.proba <= 1)).all()
        assert_array_equal(preds.label, (preds.proba >= result.threshold).astype(int))
    assert [len(result.tests[s]) for s in ("test_seen", "test_unseen")] == [50, 20]
    assert_allclose(result.dev_accuracy, np.mean(result.dev.label == y))


def test_ensemble_is_joined_by_id_not_by_row() -> None:
    straight = ensemble(*_problem(3)[:3])
    shuffled = ensemble(*_problem(3, shuffle_second=True)[:3])
    assert_array_equal(shuffled.dev.ids, straight.dev.ids)
    assert_array_equal(shuffled.dev.proba, straight.dev.proba)
    assert shuffled.weights == straight.weights


def test_ensemble_of_one_model_is_that_model() -> None:
    dev, labels, tests, m, _ = _problem(1)
    result = ensemble(dev, labels, tests)
    assert_array_equal(result.dev.proba, m[:, 0])
    assert_array_equal(result.tests["test_seen"].proba, tests["test_seen"]["EL"].proba)
    assert result.weights == {"EL": 1.0} and result.rounds == []
    assert result.dev_auroc == result.column_auroc["EL"]


def test_ensemble_errors_name_the_sources() -> None:
    dev, labels, tests, _, _ = _problem(2)
    short = dict(dev)
    short["U"] = Predictions(dev["U"].ids[1:], dev["U"].proba[1:], dev["U"].label[1:])
    with pytest.raises(HmDataError, match=r"ids differ between dev_seen/EL and dev_seen/U.*00000"):
        ensemble(short, labels, tests)
    with pytest.raises(HmDataError, match=r"split test_seen has models \['EL'\]"):
        ensemble(dev, labels, {"test_seen": {"EL": tests["test_seen"]["EL"]}})
    partial = {k: v for k, v in labels.items() if k != "00003"}
    with pytest.raises(HmDataError, match=r"dev_seen.jsonl: .*1 predicted memes have no label"):
        ensemble(dev, partial, tests, labels_source="prepared/dev_seen.jsonl")
    with pytest.raises(HmDataError, match="no model predictions"):
        ensemble({}, labels, {})


# Hand-made ensembles. Dev memes are listed negatives n1..n4, then positives p1..p4; the models'
# rows come in other orders (model A's order is the join order, so the output's order).
HAND_IDS = np.array(["04120", "00931", "07385", "02256", "09014", "00307", "05568", "03842"])
HAND_Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
HAND_LABELS = dict(zip(HAND_IDS.tolist(), HAND_Y.tolist(), strict=True))


def _hand_models(
    ids: np.ndarray, columns: dict[str, list[float]], orders: dict[str, list[int]]
) -> dict[str, Predictions]:
    return {n: _preds(ids, np.array(c), np.array(orders[n])) for n, c in columns.items()}


def test_ensemble_by_hand_with_equal_weights() -> None:
    #       y   A    B    C   | B' = (B-.3)/.5   C' = (C-.1)/.5   (A spans [0, 1]: A' = A)
    # n1    0  0.0  .30  .10  |  0               0
    # n2    0  0.1  .35  .45  | .1              .7
    # n3    0  0.2  .40  .20  | .2              .2
    # n4    0  0.3  .60  .25  | .6              .3
    # p1    1  0.7  .50  .50  | .4              .8
    # p2    1  0.8  .55  .60  | .5             1.0
    # p3    1  0.9  .70  .40  | .8              .6
    # p4    1  1.0  .80  .15  | 1.0             .1
    # dev AUROC (16 neg/pos pairs): A 16/16 = 1; B: n4 > p1, p2 -> 14/16 = .875;
    # C: n2 > p3, p4, n3 > p4, n4 > p4 -> 12/16 = .75
    A = [0.0, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 1.0]
    B = [0.30, 0.35, 0.40, 0.60, 0.50, 0.55, 0.70, 0.80]
    C = [0.10, 0.45, 0.20, 0.25, 0.50, 0.60, 0.40, 0.15]
    # round 1, as sums over the 3 models (n1..n4 | p1..p4):
    # SA1 = (A + B' + C')/3:    0, .9, .6, 1.2     | 1.9, 2.3, 2.3, 2.1       (/3)
    # PA1 = (A² + B'² + C'²)/3: 0, .51, .12, .54   | 1.29, 1.89, 1.81, 2.01   (/3)
    # RA1: ranks A 1..8; B 1,2,3,6 | 4,5,7,8; C 1,6,3,4 | 7,8,5,2
    #      sums 3, 10, 9, 14 | 16, 19, 19, 18 (/24)
    # SX1: the raw sums A + B + C: .40, .90, .80, 1.15 | 1.70, 1.95, 2.00, 1.95 already separate,
    #      so equal weights reach AUROC 1 and, as the first start, are kept: SX1 = sums/3
    # all 4 blends separate the classes: AUROC 1 each
    sa1 = np.array([0, 0.9, 0.6, 1.2, 1.9, 2.3, 2.3, 2.1]) / 3
    pa1 = np.array([0, 0.51, 0.12, 0.54, 1.29, 1.89, 1.81, 2.01]) / 3
    ra1 = np.array([3, 10, 9, 14, 16, 19, 19, 18]) / 24
    sx1 = np.array([0.40, 0.90, 0.80, 1.15, 1.70, 1.95, 2.00, 1.95]) / 3
    m = np.array([A, B, C]).T
    assert_allclose(simple_average(m, normalize=True), sa1)
    assert_allclose(simple_average(m, power=2, normalize=True), pa1)
    assert_allclose(rank_average(m), ra1)
    # round 2: A, B, C, SA1, PA1, RA1, SX1 score 1, .875, .75, 1, 1, 1, 1: the two lowest, C then B,
    # go (no tie). The 5 kept all separate, so their plain mean does and SX2 keeps weights 1/5:
    # FIN = (A + SA1 + PA1 + RA1 + SX1)/5 = (120 A + 40 (SA1+PA1+SX1 sums) + 5 RA1 sums)/600
    # n1 (0 + 16 + 15)/600 = .0517    n2 (12 + 92.4 + 50)/600 = .2573
    # n3 (24 + 60.8 + 45)/600 = .2163 n4 (36 + 115.6 + 70)/600 = .3693
    # p1 (84 + 195.6 + 80)/600 = .5993  p2 (96 + 245.6 + 95)/600 = .7277
    # p3 (108 + 244.4 + 95)/600 = .7457 p4 (120 + 242.4 + 90)/600 = .754
    # accuracy-optimal threshold = the lowest positive, p1: 359.6/600 = .59933 (accuracy 1)
    fin_dev = np.array([31, 154.4, 129.8, 221.6, 359.6, 436.6, 447.4, 452.4]) / 600
    assert_allclose((np.array(A) + sa1 + pa1 + ra1 + sx1) / 5, fin_dev)

    # test_seen, min-max and ranks taken within its 4 memes (A, B, C all span .5):
    #       A    B    C   | A'  B'  C'  | ranks A B C
    # t1   .2   .3   .2   | 0   0   .2  | 1 1 2
    # t2   .7   .8   .4   | 1   1   .6  | 4 4 3
    # t3   .45  .5   .6   | .5  .4  1   | 2 3 4
    # t4   .6   .4   .1   | .8  .2  0   | 3 2 1
    # sums: SA1 .2, 2.6, 1.9, 1.0; PA1 .04, 2.36, 1.41, .68; raw (SX1) .7, 1.9, 1.55, 1.1 (all /3);
    #       RA1 4, 11, 9, 6 (/12)
    # FIN = (60 A + 20 (SA1+PA1+SX1 sums) + 5 RA1 sums)/300:
    # t1 (12 + 18.8 + 20)/300 = .1693 -> 0   t2 (42 + 137.2 + 55)/300 = .7807 -> 1
    # t3 (27 + 97.2 + 45)/300 = .564 -> 0    t4 (36 + 55.6 + 30)/300 = .4053 -> 0
    # (t4 has A = .6 >= the threshold on its own, yet the ensemble labels it 0)
    test_ids = np.array(["10455", "08210", "06073", "01999"])
    test_cols = {"A": [0.2, 0.7, 0.45, 0.6], "B": [0.3, 0.8, 0.5, 0.4], "C": [0.2, 0.4, 0.6, 0.1]}
    orders = {"A": list(range(8)), "B": list(range(8))[::-1], "C": np.argsort(HAND_IDS).tolist()}
    dev = _hand_models(HAND_IDS, {"A": A, "B": B, "C": C}, orders)
    t_orders = {"A": [0, 1, 2, 3], "B": [3, 2, 1, 0], "C": np.argsort(test_ids).tolist()}
    tests = {"test_seen": _hand_models(test_ids, test_cols, t_orders)}

    result = ensemble(dev, HAND_LABELS, tests)

    r1, r2 = result.rounds
    assert r1["columns"] == ["A", "B", "C"]
    assert result.column_auroc == r1["column_auroc"] == {"A": 1.0, "B": 0.875, "C": 0.75}
    assert r1["blend_auroc"] == {"SA1": 1.0, "PA1": 1.0, "RA1": 1.0, "SX1": 1.0}
    assert_allclose(list(r1["sx_weights"].values()), [1 / 3] * 3)
    assert r2["dropped"] == ["B", "C"]
    assert r2["columns"] == ["A", "SA1", "PA1", "RA1", "SX1"]
    assert r2["column_auroc"] == dict.fromkeys(r2["columns"], 1.0)
    assert list(result.weights) == r2["columns"]
    assert_allclose(list(result.weights.values()), [0.2] * 5)

    assert_array_equal(result.dev.ids, HAND_IDS)  # model A's row order
    assert_allclose(result.dev.proba, fin_dev)
    assert_allclose(result.threshold, 359.6 / 600)
    assert result.threshold == result.dev.proba[4]  # exactly p1's score
    assert_array_equal(result.dev.label, HAND_Y)
    assert result.dev_auroc == 1.0 and result.dev_accuracy == 1.0

    fin_test = result.tests["test_seen"]
    assert fin_test.source == "FIN_test_seen"
    assert_array_equal(fin_test.ids, test_ids)
    assert_allclose(fin_test.proba, np.array([50.8, 234.2, 169.2, 121.6]) / 300)
    assert_array_equal(fin_test.label, [0, 1, 0, 0])


def test_ensemble_by_hand_tie_and_optimised_weights() -> None:
    #       y   A    B    C   | A' = (A-.1)/.8  B' = (B-.3)/.5  (C spans [0, 1]: C' = C)
    # n1    0  .1   .30  .2   | 0               0
    # n2    0  .2   .35  .3   | 1/8             .1
    # n3    0  .3   .40  .6   | 2/8             .2
    # n4    0  .4   .60  .0   | 3/8             .6
    # p1    1  .6   .55  .1   | 5/8             .5
    # p2    1  .7   .65  .4   | 6/8             .7
    # p3    1  .8   .70  .5   | 7/8             .8
    # p4    1  .9   .80  1.0  | 1               1
    # dev AUROC: A 1; B: n4 > p1 -> 15/16 = .9375; C: n1, n2 > p1, n3 > p1, p2, p3 -> 11/16 = .6875
    A = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    B = [0.30, 0.35, 0.40, 0.60, 0.55, 0.65, 0.70, 0.80]
    C = [0.2, 0.3, 0.6, 0.0, 0.1, 0.4, 0.5, 1.0]
    # SA1 sums A'+B'+C': .2, .525, 1.05, .975 | 1.225, 1.85, 2.175, 3 -> separates, AUROC 1
    # PA1 sums of squares: .04, .115625, .4625, .500625 | .650625, ... -> separates, AUROC 1
    # RA1: ranks A 1..8; B 1,2,3,5 | 4,6,7,8; C 3,4,7,1 | 2,5,6,8
    #      sums 5, 8, 13, 10 | 11, 17, 20, 24: n3 > p1 -> 15/16 = .9375, tied with B
    # SX1: equal weights do not separate (raw sums n3 .3+.4+.6 = 1.3 > p1 .6+.55+.1 = 1.25), but
    #      A alone does, so the optimiser must move off equal weights and reaches AUROC 1
    assert auroc(HAND_Y, (np.array(A) + np.array(B) + np.array(C)) / 3) == 0.9375
    # round 2: A, B, C, SA1, PA1, RA1, SX1 score 1, .9375, .6875, 1, 1, .9375, 1: C goes first,
    # then B and RA1 tie and the later column, RA1, goes (originals outlive blends on a tie)
    # test_unseen: t_lo (all 0), t_mid (all .5), t_hi (all 1) -> min-max .0/.5/1 in each model;
    # round-2 columns A, B, SA1, PA1, SX1 are then 0 for t_lo, 1 for t_hi (SX1 = Σw = 1) and
    # .5, .5, .5, .25, .5 for t_mid, so FIN(t_mid) = .5 - .25·w2[PA1] whatever the weights
    ids = HAND_IDS
    orders = {
        "A": [3, 6, 0, 5, 1, 7, 2, 4],
        "B": [7, 2, 4, 0, 5, 3, 1, 6],
        "C": [1, 4, 6, 2, 0, 7, 5, 3],
    }
    dev = _hand_models(ids, {"A": A, "B": B, "C": C}, orders)
    test_ids = np.array(["80000", "80001", "80002"])  # t_lo, t_mid, t_hi
    flat = [0.0, 0.5, 1.0]
    t_orders = {"A": [2, 0, 1], "B": [1, 2, 0], "C": [0, 1, 2]}
    tests = {"test_unseen": _hand_models(test_ids, dict.fromkeys("ABC", flat), t_orders)}

    result = ensemble(dev, HAND_LABELS, tests)

    r1, r2 = result.rounds
    assert result.column_auroc == {"A": 1.0, "B": 0.9375, "C": 0.6875}
    assert r1["blend_auroc"] == {"SA1": 1.0, "PA1": 1.0, "RA1": 0.9375, "SX1": 1.0}
    w1 = np.array(list(r1["sx_weights"].values()))
    assert (w1 >= 0).all() and int(w1.argmax()) == 0  # the perfect column A weighs most
    assert_allclose(w1.sum(), 1.0)
    assert r2["dropped"] == ["C", "RA1"]
    assert r2["columns"] == ["A", "B", "SA1", "PA1", "SX1"]
    w2 = result.weights
    assert list(w2) == r2["columns"] and all(v >= 0 for v in w2.values())
    assert_allclose(sum(w2.values()), 1.0)

    # joined by id: the output is in A's row order, every meme keeps its own label
    assert_array_equal(result.dev.ids, ids[orders["A"]])
    fin = dict(zip(result.dev.ids.tolist(), result.dev.proba.tolist(), strict=True))
    assert_array_equal(result.dev.label, [HAND_LABELS[i] for i in result.dev.ids])
    assert result.dev_auroc == 1.0 and result.dev_accuracy == 1.0
    # perfect separation: the highest accuracy-1 threshold is the lowest positive's score, and
    # it is at most FIN(p1) <= max(p1's round-2 columns) = A(p1) = .6 (B .55, SA1 .41, PA1 .22,
    # SX1 <= .6)
    positives = [fin[i] for i in ids[4:]]
    assert result.threshold == min(positives) > max(fin[i] for i in ids[:4])
    assert result.threshold <= 0.6

    fin_test = result.tests["test_unseen"]
    assert_array_equal(fin_test.ids, test_ids[t_orders["A"]])
    proba = dict(zip(fin_test.ids.tolist(), fin_test.proba.tolist(), strict=True))
    label = dict(zip(fin_test.ids.tolist(), fin_test.label.tolist(), strict=True))
    assert proba["80000"] == 0.0 and label["80000"] == 0  # below any threshold > max negative
    assert_allclose(proba["80002"], 1.0)
    assert label["80002"] == 1  # above .6 >= threshold
    assert_allclose(proba["80001"], 0.5 - 0.25 * w2["PA1"])
    assert label["80001"] == int(proba["80001"] >= result.threshold)


@pytest.mark.parametrize("n_models", [1, 2, 4])
def test_the_stored_ensemble_scores_new_memes_as_its_reference_split_was_scored(
    n_models: int,
) -> None:
    # orchestrator predict: ensemble.json (through JSON, as written) + the models' test_unseen
    # predictions as the reference give each test_unseen meme exactly its final probability,
    # whether it comes alone, with others or in another order
    dev, labels, tests, _, _ = _problem(n_models)
    result = ensemble(dev, labels, tests)
    summary = json.loads(json.dumps(result.summary(), sort_keys=True))
    reference = tests["test_unseen"]
    final = result.tests["test_unseen"]
    again = apply_ensemble(summary, reference, reference)
    assert_array_equal(again.ids, final.ids)
    assert_array_equal(again.proba, final.proba)
    assert_array_equal(again.label, final.label)
    order = np.array([7, 2, 19])  # three of the twenty, reordered
    subset = {name: _preds(p.ids[order], p.proba[order]) for name, p in reference.items()}
    alone = apply_ensemble(summary, subset, reference)
    expected = dict(zip(final.ids.tolist(), final.proba.tolist(), strict=True))
    assert alone.proba.tolist() == [expected[i] for i in alone.ids.tolist()]
    # a new meme every model scores above all reference memes ranks above them all
    top = {name: _preds(np.array(["new"]), np.array([1.0])) for name in reference}
    assert apply_ensemble(summary, top, reference).proba[0] >= final.proba.max()


def test_the_stored_ensemble_refuses_other_models() -> None:
    dev, labels, tests, _, _ = _problem(2)
    summary = ensemble(dev, labels, tests).summary()
    other = {"EL": tests["test_unseen"]["EL"], "X": tests["test_unseen"]["U"]}
    with pytest.raises(HmDataError, match=r"blends models \['EL', 'U'\]; got predictions of"):
        apply_ensemble(summary, other, tests["test_unseen"])


@pytest.mark.parametrize("k", [2, 5, 9, 17])
def test_a_row_sums_alike_alone_or_among_many(k: int) -> None:
    # what makes `orchestrator predict` give a meme its exact final probability: a row's blend
    # does not depend on the rows beside it (a BLAS matrix-vector product may)
    rng = np.random.default_rng(k)
    m, w = rng.random((1001, k)), rng.random(k)
    whole = weighted_sum(m, w)
    alone = [weighted_sum(m[i : i + 1], w)[0] for i in range(0, 1001, 37)]
    assert alone == whole[::37].tolist()
    assert_allclose(whole, m @ w, rtol=1e-14)
