"""The upstream ensemble, on probabilities and joined by meme id.

Blends of k model columns: simple average SA (per-split min-max, power 1), power average PA
(power 2), rank average RA, and SX, weights on the simplex that maximise dev_seen AUROC.
Round 1 blends the N models; round 2 keeps the 5 best of the N models + 4 blends by dev AUROC
and blends again; the final score is round-2 SX, labelled with the accuracy-optimal dev
threshold. Upstream's bugs are not kept: rows are joined by id (not position), every column is
a probability (not a mix of log-probabilities and logits), the threshold uses the real class
counts (not 250/250), and the dev labels are updated too. One deliberate change of rule: when
two columns tie for the lowest dev AUROC in round 2, the later one (a blend) is dropped, where
upstream's strict `<` scan drops the earlier one (a model): the originals outlive the blends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.stats import rankdata

from hm_shared.dataset import read_prepared
from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import atomic_write_json
from hm_shared.metrics import auroc, best_threshold
from hm_shared.predictions import Predictions, join_by_id, read_predictions, write_predictions
from hm_shared.spec import StageSpec

DEV_SPLIT = "dev_seen"
TEST_SPLITS = ("test_seen", "test_unseen")
BLENDS = ("SA", "PA", "RA", "SX")
KEEP = 5  # columns kept for round 2, as upstream
_EVALS_PER_WEIGHT = 100  # Nelder-Mead budget per start, times the number of columns
_SHOWN_IDS = 5


def _weights(k: int, weights: ArrayLike | None) -> np.ndarray:
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"expected {k} non-negative weights with a positive sum, got {w}")
    return w / w.sum()


def weighted_sum(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σⱼ wⱼ·matrix[:, j], one column after another: a row's value depends on that row alone.
    A BLAS `matrix @ weights` may sum a row in another order depending on the row count and the
    CPU's kernel, and a meme scored alone (`orchestrator predict`) would then differ in the last
    bit from the same meme scored with its whole split."""
    out = np.zeros(matrix.shape[0])
    for j in range(matrix.shape[1]):
        out += matrix[:, j] * weights[j]
    return out


def simple_average(
    matrix: ArrayLike,
    weights: ArrayLike | None = None,
    power: float = 1.0,
    normalize: bool = False,
    reference: ArrayLike | None = None,
) -> np.ndarray:
    """Σ wᵢ·pᵢ^power over the columns of `matrix` (float[n, k]); weights are scaled to sum 1.

    `normalize` min-max scales each column first: within this matrix (one split), or with the
    minimum and maximum of `reference` (float[m, k]; values beyond them are clipped to [0, 1]).

    >>> simple_average([[0.2, 0.6], [0.4, 1.0]], power=2).round(6).tolist()
    [0.2, 0.58]
    >>> simple_average([[0.3, 0.8]], normalize=True, reference=[[0.2, 0.6], [0.4, 1.0]]).tolist()
    [0.5]
    """
    m = np.asarray(matrix, dtype=np.float64)
    w = _weights(m.shape[1], weights)
    if normalize:
        ref = m if reference is None else np.asarray(reference, dtype=np.float64)
        lo, hi = ref.min(axis=0), ref.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        # A constant column carries no ranking; 0.5 keeps it neutral instead of upstream's NaN.
        m = np.where(hi > lo, (m - lo) / span, 0.5)
        if reference is not None:
            m = np.clip(m, 0.0, 1.0)
    return weighted_sum(m**power, w)  # (n,)


def rank_average(
    matrix: ArrayLike, weights: ArrayLike | None = None, reference: ArrayLike | None = None
) -> np.ndarray:
    """Σ wᵢ·rank(pᵢ)/n: each column replaced by its ranks (ties averaged), scaled into (0, 1].

    With `reference` (float[m, k]) a value is ranked among that column's reference values
    instead (one that is not among them falls half-way between its neighbours), over m: a row
    of the reference gets exactly the rank it has there.

    >>> rank_average([[0.1, 0.7], [0.9, 0.8], [0.5, 0.3]]).tolist()
    [0.5, 1.0, 0.5]
    >>> ref = [[0.1, 0.7], [0.9, 0.8], [0.5, 0.3]]
    >>> rank_average([[0.9, 0.8], [0.6, 0.2]], reference=ref).round(6).tolist()
    [1.0, 0.5]
    """
    m = np.asarray(matrix, dtype=np.float64)
    w = _weights(m.shape[1], weights)
    if reference is None:
        ranks = rankdata(m, axis=0) / m.shape[0]  # (n, k)
    else:
        ref = np.sort(np.asarray(reference, dtype=np.float64), axis=0)  # (m, k)
        ranks = np.empty_like(m)
        for j in range(m.shape[1]):
            below = np.searchsorted(ref[:, j], m[:, j], side="left")
            upto = np.searchsorted(ref[:, j], m[:, j], side="right")
            # the mean of the tied positions; a value above every reference one ranks first
            ranks[:, j] = np.minimum((below + 1 + upto) / 2, ref.shape[0]) / ref.shape[0]
    return weighted_sum(ranks, w)


def _fast_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    # The optimiser's objective: AUROC as the Mann-Whitney statistic from scipy's ranks (ties
    # count one half, exactly as roc_auc_score), ~15x faster than roc_auc_score's validation.
    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def optimize_weights(matrix: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Simplex weights (float[k]) maximising AUROC(y, matrix @ w) over `matrix` (float[n, k]).

    Nelder-Mead on |z| / Σ|z|, started from equal weights and from every single column, so the
    result is deterministic and never worse than the best column; ties keep the earlier start.

    >>> y, m = [0, 0, 1, 1], np.array([[0.1, 0.9], [0.2, 0.2], [0.3, 0.1], [0.4, 0.8]])
    >>> w = optimize_weights(m, y)  # column 0 alone ranks perfectly, column 1 does not
    >>> int(w.argmax()), auroc(y, m @ w)
    (0, 1.0)
    """
    m = np.asarray(matrix, dtype=np.float64)
    labels = np.asarray(y)
    auroc(labels, m[:, 0])  # validates labels (0/1, both classes) and the length
    k = m.shape[1]
    if k == 1:
        return np.ones(1)
    positive = labels == 1

    def loss(z: np.ndarray) -> float:
        w = np.abs(z)
        total = w.sum()
        return 0.0 if total == 0 else -_fast_auroc(m @ (w / total), positive)

    best_z, best_loss = None, np.inf
    for x0 in [np.full(k, 1.0 / k), *np.eye(k)]:
        simplex = np.vstack([x0, x0 + 0.5 * np.eye(k)])  # large steps: the loss is a step function
        result = minimize(
            loss,
            x0,
            method="Nelder-Mead",
            options={
                "initial_simplex": simplex,
                "maxfev": _EVALS_PER_WEIGHT * k,
                "xatol": 1e-4,
                "fatol": 1e-7,
            },
        )
        for z in (x0, result.x):
            value = loss(z)
            if value < best_loss - 1e-12:
                best_z, best_loss = z, value
    w = np.abs(best_z)
    return w / w.sum()


@dataclass(frozen=True)
class EnsembleResult:
    """Final dev and test predictions plus everything needed to explain them."""

    dev: Predictions
    tests: dict[str, Predictions]
    threshold: float
    dev_auroc: float
    dev_accuracy: float
    column_auroc: dict[str, float]  # dev AUROC of each input model
    rounds: list[dict[str, Any]]  # per round: columns, their AUROC, blends' AUROC, SX weights
    weights: dict[str, float]  # final SX weights by round-2 column (the model itself for N = 1)

    def summary(self) -> dict[str, Any]:
        """Everything but the predictions, JSON-ready.

        >>> p = Predictions(("1", "2"), [0.2, 0.8], [0, 1])
        >>> EnsembleResult(p, {}, 0.8, 1.0, 1.0, {"U": 1.0}, [], {"U": 1.0}).summary()["weights"]
        {'U': 1.0}
        """
        return {
            "column_auroc": self.column_auroc,
            "rounds": self.rounds,
            "weights": self.weights,
            "threshold": self.threshold,
            "dev_auroc": self.dev_auroc,
            "dev_accuracy": self.dev_accuracy,
            "memes": {DEV_SPLIT: len(self.dev)} | {s: len(p) for s, p in self.tests.items()},
        }


def labels_for(preds: Predictions, labels: Mapping[str, int], source: str) -> np.ndarray:
    """Labels (int[n]) in `preds`' id order; an error when the two id sets differ.

    >>> labels_for(Predictions(("2", "1"), [0.3, 0.6], [0, 1]), {"1": 1, "2": 0}, "x").tolist()
    [0, 1]
    """
    ids = preds.ids.tolist()
    missing = sorted(set(ids) - set(labels))
    extra = sorted(set(labels) - set(ids))
    if missing or extra:
        parts = []
        if missing:
            shown = ", ".join(missing[:_SHOWN_IDS])
            parts.append(f"{len(missing)} predicted memes have no label ({shown})")
        if extra:
            parts.append(
                f"{len(extra)} labelled memes have no prediction ({', '.join(extra[:_SHOWN_IDS])})"
            )
        raise HmDataError(
            f"the memes of {preds.source} and the labels differ: {'; '.join(parts)}", source
        )
    return np.array([labels[i] for i in ids], dtype=np.int64)


def _named(split: str, name: str, preds: Predictions) -> Predictions:
    if preds.source != "<memory>":
        return preds
    return dataclasses.replace(preds, source=f"{split}/{name}")


def _blends(
    names: list[str], dev: np.ndarray, tests: dict[str, np.ndarray], y: np.ndarray, tag: str
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """One round: SA, PA, RA, SX of the columns; returns the blend names, dev and test blends."""
    sx_weights = optimize_weights(dev, y)

    def blend(m: np.ndarray) -> np.ndarray:
        return _round_blends(m, sx_weights, None)  # (n, 4)

    blend_names = [f"{b}{tag}" for b in BLENDS]
    dev_blends = blend(dev)
    info = {
        "columns": names,
        "column_auroc": {n: auroc(y, dev[:, i]) for i, n in enumerate(names)},
        "blend_auroc": {n: auroc(y, dev_blends[:, i]) for i, n in enumerate(blend_names)},
        "sx_weights": dict(zip(names, sx_weights.tolist(), strict=True)),
    }
    return blend_names, dev_blends, {s: blend(m) for s, m in tests.items()}, info


def _best_columns(scores: list[float], keep: int) -> list[int]:
    """Positions of the `keep` best scores, in their original order, dropping the lowest first.

    Among equal scores the later column goes first, so originals outlive blends on a tie.

    >>> _best_columns([0.7, 0.6, 0.8, 0.6], 2)
    [0, 2]
    """
    kept = list(range(len(scores)))
    while len(kept) > keep:
        kept.remove(min(kept, key=lambda i: (scores[i], -i)))
    return kept


def ensemble(
    dev: Mapping[str, Predictions],
    dev_labels: Mapping[str, int],
    tests: Mapping[str, Mapping[str, Predictions]],
    *,
    labels_source: str = "dev labels",
) -> EnsembleResult:
    """Two-round ensemble of model columns `dev` (name → dev_seen predictions), joined by id.

    `tests` maps a split to the same models' predictions on it. With one model, the final score
    is that model's probability; the threshold is always the accuracy-optimal one on dev.

    >>> dev = {"U": Predictions(("1", "2", "3"), [0.2, 0.7, 0.6], [0, 1, 1])}
    >>> result = ensemble(dev, {"1": 0, "2": 1, "3": 0}, {})
    >>> result.dev.proba.tolist(), result.threshold, result.dev_accuracy
    ([0.2, 0.7, 0.6], 0.7, 1.0)
    """
    names = list(dev)
    if not names:
        raise HmDataError("no model predictions to ensemble; expected at least one model")
    for split, models in tests.items():
        if set(models) != set(names):
            raise HmDataError(
                f"split {split} has models {sorted(models)} but {DEV_SPLIT} has {sorted(names)}; "
                "expected the same models in every split"
            )
    dev_cols = [_named(DEV_SPLIT, n, dev[n]) for n in names]
    ids, dev_m = join_by_id(dev_cols)  # (n_dev, N)
    y = labels_for(dev_cols[0], dev_labels, labels_source)
    test_ids, test_m = {}, {}
    for split, models in tests.items():
        test_ids[split], test_m[split] = join_by_id([_named(split, n, models[n]) for n in names])

    column_auroc = {n: auroc(y, dev_m[:, i]) for i, n in enumerate(names)}
    rounds: list[dict[str, Any]] = []
    if len(names) == 1:
        final_dev, weights = dev_m[:, 0], {names[0]: 1.0}
        final_tests = {s: m[:, 0] for s, m in test_m.items()}
    else:
        blend_names, dev_b, test_b, info = _blends(names, dev_m, test_m, y, "1")
        rounds.append(info)
        # Round 2: the N models and the 4 blends compete; the lowest dev AUROC goes until 5 stay.
        cand_names = names + blend_names
        cand_dev = np.hstack([dev_m, dev_b])
        cand_tests = {s: np.hstack([test_m[s], test_b[s]]) for s in test_m}
        keep = _best_columns([auroc(y, cand_dev[:, i]) for i in range(len(cand_names))], KEEP)
        kept_names = [cand_names[i] for i in keep]
        dropped = [n for n in cand_names if n not in kept_names]
        blend_names, dev_b, test_b, info = _blends(
            kept_names, cand_dev[:, keep], {s: m[:, keep] for s, m in cand_tests.items()}, y, "2"
        )
        rounds.append({"dropped": dropped, **info})
        sx = BLENDS.index("SX")
        final_dev, final_tests = dev_b[:, sx], {s: m[:, sx] for s, m in test_b.items()}
        weights = info["sx_weights"]

    final_dev = np.clip(final_dev, 0.0, 1.0)
    threshold, dev_accuracy = best_threshold(y, final_dev)

    def labelled(split_ids: np.ndarray, proba: np.ndarray, split: str) -> Predictions:
        proba = np.clip(proba, 0.0, 1.0)
        return Predictions(split_ids, proba, (proba >= threshold).astype(np.int64), f"FIN_{split}")

    return EnsembleResult(
        dev=labelled(ids, final_dev, DEV_SPLIT),
        tests={s: labelled(test_ids[s], final_tests[s], s) for s in test_m},
        threshold=threshold,
        dev_auroc=auroc(y, final_dev),
        dev_accuracy=dev_accuracy,
        column_auroc=column_auroc,
        rounds=rounds,
        weights=weights,
    )


def _round_blends(
    m: np.ndarray, sx_weights: np.ndarray, reference: np.ndarray | None
) -> np.ndarray:
    """One round's SA, PA, RA and SX of the columns of `m` (float[n, 4]); SA, PA and RA scale
    a column within `m` (one split), or as in `reference` when given (`apply_ensemble`)."""
    return np.stack(
        [
            simple_average(m, normalize=True, reference=reference),
            simple_average(m, power=2, normalize=True, reference=reference),
            rank_average(m, reference=reference),
            np.clip(weighted_sum(m, sx_weights), 0.0, 1.0),
        ],
        axis=1,
    )


def apply_ensemble(
    summary: Mapping[str, Any],
    models: Mapping[str, Predictions],
    reference: Mapping[str, Predictions],
) -> Predictions:
    """The final score of an ensemble (its `summary()`, i.e. ensemble.json) for new memes.

    `models` maps each ensembled model to its predictions of the new memes; `reference` to its
    predictions of the split the scaling is frozen on. The round-1 blends SA, PA and RA scale a
    column within its split (min-max, ranks); a new meme is scaled as that split's memes were,
    so a meme of the reference split gets exactly its final probability there. Round-2 SX
    weights and the threshold are the stored ones.
    """
    rounds = summary["rounds"]
    names = list(rounds[0]["columns"]) if rounds else list(summary["weights"])
    if sorted(models) != sorted(names) or sorted(reference) != sorted(names):
        raise HmDataError(
            f"the ensemble blends models {sorted(names)}; got predictions of {sorted(models)} "
            f"and reference predictions of {sorted(reference)}"
        )
    ids, m = join_by_id([models[n] for n in names])  # (n, N)
    if len(names) == 1:
        final = m[:, 0]
    else:
        _, ref = join_by_id([reference[n] for n in names])
        first = np.array([rounds[0]["sx_weights"][n] for n in names])
        candidates = names + [f"{b}1" for b in BLENDS]
        stacked = np.hstack([m, _round_blends(m, first, ref)])
        kept = list(rounds[1]["columns"])
        columns = stacked[:, [candidates.index(c) for c in kept]]
        second = np.array([rounds[1]["sx_weights"][c] for c in kept])
        final = np.clip(weighted_sum(columns, second), 0.0, 1.0)
    proba = np.clip(final, 0.0, 1.0)
    label = (proba >= float(summary["threshold"])).astype(np.int64)
    return Predictions(ids, proba, label, "ensemble of " + ", ".join(names))


def _model_inputs(spec: StageSpec) -> dict[str, Path]:
    unknown = [n for n in spec.inputs if n != "prepared" and not n.startswith("model:")]
    if unknown:
        raise SpecError(
            f"stage {spec.stage}: unexpected inputs {unknown}; an ensemble stage takes "
            "'model:<letter>' inputs and 'prepared'"
        )
    models = spec.paths_named("model:")
    if not models:
        raise SpecError(f"stage {spec.stage}: no 'model:<letter>' inputs to ensemble")
    return models


def read_model_split(name: str, pred_dir: Path, split: str) -> Predictions:
    """`<pred_dir>/<split>.csv` of model `name`, with an error naming what the directory lacks."""
    path = pred_dir / f"{split}.csv"
    if not path.is_file():
        raise HmDataError(
            f"model {name} has no {split}.csv; expected the average stage's "
            f"{DEV_SPLIT}.csv, {', '.join(f'{s}.csv' for s in TEST_SPLITS)}",
            pred_dir,
        )
    return read_predictions(path)


def read_dev_labels(prepared_dir: Path) -> tuple[dict[str, int], Path]:
    """Labels of `prepared/dev_seen.jsonl` by meme id; every dev meme must be labelled."""
    path = prepared_dir / f"{DEV_SPLIT}.jsonl"
    if not path.is_file():
        raise HmDataError(
            f"no {DEV_SPLIT}.jsonl; expected the prepare stage's output (run "
            "`orchestrator run` to prepare the dataset first)",
            prepared_dir,
        )
    labels: dict[str, int] = {}
    for meme in read_prepared(path):
        if meme.label is None:
            raise HmDataError(
                f"meme {meme.id} has no label; the ensemble needs a labelled {DEV_SPLIT}", path
            )
        labels[meme.id] = int(meme.label)
    return labels, path


def ensemble_stage(spec: StageSpec) -> None:
    """Ensemble the `model:<letter>` inputs; write FIN_<split>.csv and ensemble.json."""
    models = _model_inputs(spec)
    labels, labels_path = read_dev_labels(spec.path("prepared"))
    dev = {m: read_model_split(m, d, DEV_SPLIT) for m, d in models.items()}
    tests = {s: {m: read_model_split(m, d, s) for m, d in models.items()} for s in TEST_SPLITS}
    result = ensemble(dev, labels, tests, labels_source=str(labels_path))
    write_predictions(spec.output_dir / f"FIN_{DEV_SPLIT}.csv", result.dev)
    for split, preds in result.tests.items():
        write_predictions(spec.output_dir / f"FIN_{split}.csv", preds)
    summary = result.summary() | {"inputs": {m: spec.inputs[f"model:{m}"] for m in models}}
    atomic_write_json(spec.output_dir / "ensemble.json", summary)
