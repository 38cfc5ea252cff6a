"""The run report: one self-contained index.html (inline CSS and SVG, no scripts, no assets)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from sklearn.metrics import roc_curve

from hm_shared.ensemble import DEV_SPLIT, labels_for, read_dev_labels, read_model_split
from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import atomic_write_text
from hm_shared.metrics import auroc, best_threshold
from hm_shared.predictions import Predictions, read_predictions
from hm_shared.spec import StageSpec

TIMING_COLUMNS = ("stage", "kind", "runtime", "start", "end", "seconds", "cached")
_SIZE, _PAD = 200, 24  # ROC plot area and margin, px

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.rocs{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}figcaption{text-align:center}
"""


@dataclass(frozen=True)
class ColumnScore:
    """Dev metrics of one model or of the ensemble, with its ROC curve inputs."""

    name: str
    auroc: float
    threshold: float
    accuracy: float
    y: np.ndarray
    proba: np.ndarray


def score_column(name: str, y: ArrayLike, proba: ArrayLike) -> ColumnScore:
    """AUROC, the accuracy-optimal threshold and its accuracy for one column.

    >>> s = score_column("U", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> s.auroc, s.threshold, s.accuracy
    (0.75, 0.8, 0.75)
    """
    y_arr, p_arr = np.asarray(y), np.asarray(proba, dtype=np.float64)
    threshold, acc = best_threshold(y_arr, p_arr)
    return ColumnScore(name, auroc(y_arr, p_arr), threshold, acc, y_arr, p_arr)


def roc_svg(y: ArrayLike, proba: ArrayLike, title: str) -> str:
    """An inline SVG of the ROC curve (sklearn roc_curve), diagonal dashed, title escaped.

    >>> svg = roc_svg([0, 1, 0, 1], [0.2, 0.9, 0.4, 0.3], "U <dev>")
    >>> svg.startswith("<svg") and "U &lt;dev&gt;" in svg and "<polyline" in svg
    True
    """
    fpr, tpr, _ = roc_curve(np.asarray(y), np.asarray(proba, dtype=np.float64))
    xs, ys = _PAD + fpr * _SIZE, _PAD + (1 - tpr) * _SIZE  # SVG y grows downwards
    points = " ".join(f"{px:.1f},{py:.1f}" for px, py in zip(xs, ys, strict=True))
    lo, hi, full = _PAD, _PAD + _SIZE, _SIZE + 2 * _PAD
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{full}" height="{full}" '
        f'viewBox="0 0 {full} {full}" role="img"><title>{html.escape(title)}</title>'
        f'<rect x="{lo}" y="{lo}" width="{_SIZE}" height="{_SIZE}" fill="none" stroke="#888"/>'
        f'<line x1="{lo}" y1="{hi}" x2="{hi}" y2="{lo}" stroke="#bbb" stroke-dasharray="4 3"/>'
        f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="2"/>'
        f'<text x="{full / 2}" y="{full - 4}" text-anchor="middle" font-size="11">FPR</text>'
        f'<text x="10" y="{full / 2}" font-size="11" transform="rotate(-90 10 {full / 2})" '
        'text-anchor="middle">TPR</text></svg>'
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.4f}</td>'
    if isinstance(value, bool | int):
        return f'<td class="n">{html.escape(str(value))}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(
    scores: Sequence[ColumnScore],
    weights: Mapping[str, float],
    timings: Sequence[Mapping[str, Any]],
) -> str:
    """The whole index.html: dev metrics table, ROC curves, ensemble weights, stage timings.

    >>> page = render_report([score_column("U", [0, 1], [0.3, 0.6])], {"U": 1.0}, [])
    >>> page.startswith("<!DOCTYPE html>") and "<script" not in page and "0.4500" not in page
    True
    """
    metrics = _table(
        ("column", f"{DEV_SPLIT} AUROC", "threshold (from dev)", f"{DEV_SPLIT} accuracy"),
        [(s.name, s.auroc, s.threshold, s.accuracy) for s in scores],
    )
    rocs = "".join(
        f"<figure>{roc_svg(s.y, s.proba, f'{s.name} ROC on {DEV_SPLIT}')}"
        f"<figcaption>{html.escape(s.name)} (AUROC {s.auroc:.4f})</figcaption></figure>"
        for s in scores
    )
    weight_rows = [(name, float(w)) for name, w in weights.items()]
    timing_rows = [[t.get(c) for c in TIMING_COLUMNS] for t in timings]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Hateful memes: run report</title><style>{_CSS}</style></head><body>"
        "<h1>Hateful memes: run report</h1>"
        f"<h2>Dev metrics</h2>{metrics}"
        f'<h2>ROC curves ({DEV_SPLIT})</h2><div class="rocs">{rocs}</div>'
        f"<h2>Ensemble weights (final round)</h2>{_table(('column', 'weight'), weight_rows)}"
        f"<h2>Stage timings</h2>{_table(TIMING_COLUMNS, timing_rows)}"
        "</body></html>\n"
    )


class StageTiming(BaseModel):
    """One row of the timings file the executor writes for the report (`TIMING_COLUMNS`)."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    kind: str
    runtime: str | None
    start: str | None
    end: str | None
    seconds: float | None
    cached: bool


_TIMINGS = TypeAdapter(list[StageTiming])


def read_timings(path: Path) -> list[Mapping[str, Any]]:
    """The rows of the timings file; HmDataError naming the file (and the row) otherwise."""
    try:
        rows = _TIMINGS.validate_json(path.read_bytes())
    except OSError as exc:
        raise HmDataError(f"cannot read the stage timings: {exc}", path) from exc
    except ValidationError as exc:
        raise HmDataError(
            f"expected a JSON list of stage timings with keys {', '.join(TIMING_COLUMNS)}:\n{exc}",
            path,
        ) from exc
    return [row.model_dump() for row in rows]


def report_stage(spec: StageSpec) -> None:
    """Write `index.html` from the `model:<letter>` preds, the `ensemble` output and `prepared`."""
    unknown = [n for n in spec.inputs if n not in ("prepared", "ensemble", "timings")]
    unknown = [n for n in unknown if not n.startswith("model:")]
    if unknown:
        raise SpecError(
            f"stage {spec.stage}: unexpected inputs {unknown}; a report stage takes "
            "'model:<letter>', 'ensemble', 'prepared' and 'timings'"
        )
    labels, labels_path = read_dev_labels(spec.path("prepared"))
    scores = []
    for input_name in sorted(n for n in spec.inputs if n.startswith("model:")):
        name = input_name.removeprefix("model:")
        preds = read_model_split(name, spec.path(input_name), DEV_SPLIT)
        scores.append(_score(name, preds, labels, labels_path))
    weights: dict[str, float] = {}
    if "ensemble" in spec.inputs:
        ens_dir = spec.path("ensemble")
        summary_path = ens_dir / "ensemble.json"
        try:
            weights = json.loads(summary_path.read_text(encoding="utf-8"))["weights"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HmDataError(f"cannot read the ensemble weights: {exc!r}", summary_path) from exc
        fin = read_predictions(ens_dir / f"FIN_{DEV_SPLIT}.csv")
        scores.append(_score("ensemble", fin, labels, labels_path))
    if not scores:
        raise SpecError(f"stage {spec.stage}: nothing to report; expected 'model:<letter>' inputs")
    timings = read_timings(spec.path("timings")) if "timings" in spec.inputs else []
    page = render_report(scores, weights, timings)
    atomic_write_text(spec.output_dir / "index.html", page)


def _score(name: str, preds: Predictions, labels: Mapping[str, int], source: Path) -> ColumnScore:
    return score_column(name, labels_for(preds, labels, str(source)), preds.proba)
