"""The scores stage of `orchestrator predict`: the stored ensemble applied to new memes.

Inputs: `ensemble` (the run's ensemble stage output: ensemble.json), `model:<letter>` (the
seed average of each model on the new memes: predict.csv), `reference:<letter>` (the run's
seed average of each model: the `REFERENCE_SPLIT` csv the blend's scaling is frozen on, see
`hm_shared.ensemble.apply_ensemble`), `memes` (the intake output). Output:

    scores.csv    id,proba,label: the final probability and the label of the stored threshold
    models.csv    id, then each model's seed-averaged probability
    texts.csv     id,text,source: the text each model read, "given" or by "ocr"
    index.html    each meme's image, text and scores, sortable by any column
    scores.json   threshold, models, reference split, counts
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

from PIL import Image

from hm_shared.dataset import PREDICT_SPLIT, Meme, read_prepared
from hm_shared.ensemble import apply_ensemble, read_model_split
from hm_shared.errors import HmDataError, SpecError
from hm_shared.intake import INTAKE_FILE
from hm_shared.io import atomic_open, atomic_write_json, atomic_write_text
from hm_shared.predictions import Predictions, join_by_id, write_predictions
from hm_shared.spec import StageSpec

REFERENCE_SPLIT = "test_unseen"
THUMBNAIL_PX = 224


def write_model_columns(path: Path, preds: dict[str, Predictions]) -> None:
    """`id,<letter>,…` of the models' probabilities, joined by id."""
    ids, matrix = join_by_id(list(preds.values()))
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *preds])
        for meme_id, row in zip(ids.tolist(), matrix.tolist(), strict=True):
            writer.writerow([meme_id, *(repr(float(v)) for v in row)])


def read_new_memes(memes_dir: Path) -> tuple[list[Meme], set[str]]:
    """The new memes of the intake stage's output, and the ids whose text came from OCR."""
    by_ocr = json.loads((memes_dir / INTAKE_FILE).read_text(encoding="utf-8"))["ocr"]["read"]
    return read_prepared(memes_dir / f"{PREDICT_SPLIT}.jsonl"), set(by_ocr)


def write_texts(path: Path, memes: list[Meme], by_ocr: set[str]) -> None:
    """`id,text,source` of the new memes: the text the models read, given or by OCR."""
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "source"])
        for meme in memes:
            writer.writerow([meme.id, meme.text, "ocr" if meme.id in by_ocr else "given"])


def _thumbnail(path: Path) -> str:
    """The image as a JPEG data URI at most THUMBNAIL_PX a side: the page stands alone."""
    with Image.open(path) as image:
        small = image.convert("RGB")
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_SORT_SCRIPT = """
document.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
  const body = document.querySelector('tbody'), col = +th.dataset.col;
  const down = th.dataset.dir !== 'down'; th.dataset.dir = down ? 'down' : 'up';
  const key = tr => { const v = tr.children[col].dataset.v; return isNaN(+v) ? v : +v; };
  [...body.rows].sort((a, b) => (key(a) < key(b) ? 1 : key(a) > key(b) ? -1 : 0) * (down ? 1 : -1))
    .forEach(tr => body.appendChild(tr));
}));
"""


def _cell(sort_key: object, shown: str) -> str:
    return f'<td data-v="{html.escape(str(sort_key))}">{shown}</td>'


def page(
    memes_dir: Path,
    new_memes: list[Meme],
    by_ocr: set[str],
    final: Predictions,
    models: dict[str, Predictions],
    threshold: float,
) -> str:
    """An HTML page: one row a meme (image, id, text, final score, label, models' scores),
    highest score first; a click on a heading sorts by that column."""
    memes = {m.id: m for m in new_memes}
    per_model = {
        n: dict(zip(p.ids.tolist(), p.proba.tolist(), strict=True)) for n, p in models.items()
    }
    heads = ["image", "id", "text", "score", "label", *models]
    rows = []
    for i in sorted(range(len(final)), key=lambda i: -final.proba[i]):
        meme = memes[str(final.ids[i])]
        proba, label = float(final.proba[i]), int(final.label[i])
        source = " <small>(OCR)</small>" if meme.id in by_ocr else ""
        cells = [
            _cell("", f'<img src="{_thumbnail(memes_dir / meme.img)}" alt="{meme.id}">'),
            _cell(meme.id, html.escape(meme.id)),
            _cell(meme.text, html.escape(meme.text) + source),
            _cell(repr(proba), f"{proba:.4f}"),
            _cell(label, "hateful" if label else "not hateful"),
            *(_cell(repr(per_model[n][meme.id]), f"{per_model[n][meme.id]:.4f}") for n in models),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(
        f'<th data-col="{c}">{h}</th>' if h != "image" else "<th>image</th>"
        for c, h in enumerate(heads)
    )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>hateful-meme scores</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
        "vertical-align:top}th[data-col]{cursor:pointer}img{max-width:224px}</style></head><body>"
        f"<h1>{len(final)} memes</h1><p>ensemble of {', '.join(models)}; label hateful when the "
        f"score is at least {threshold:.4f} (the run's dev_seen threshold). Click a heading to "
        f"sort.</p><table><thead><tr>{header}</tr></thead><tbody>\n"
        + "\n".join(rows)
        + f"\n</tbody></table><script>{_SORT_SCRIPT}</script></body></html>\n"
    )


def scores_stage(spec: StageSpec) -> None:
    models = spec.paths_named("model:")
    references = spec.paths_named("reference:")
    if not models or sorted(models) != sorted(references):
        raise SpecError(
            f"stage {spec.stage}: expected one 'model:<letter>' and one 'reference:<letter>' "
            f"input per model, got {sorted(spec.inputs)}"
        )
    summary_path = spec.path("ensemble") / "ensemble.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HmDataError(f"cannot read the run's ensemble summary ({exc})", summary_path) from exc
    new = {m: read_model_split(m, d, PREDICT_SPLIT) for m, d in models.items()}
    reference = {m: read_model_split(m, d, REFERENCE_SPLIT) for m, d in references.items()}
    final = apply_ensemble(summary, new, reference)
    out = spec.output_dir
    write_predictions(out / "scores.csv", final)
    write_model_columns(out / "models.csv", new)
    memes, by_ocr = read_new_memes(spec.path("memes"))
    write_texts(out / "texts.csv", memes, by_ocr)
    threshold = float(summary["threshold"])
    html_page = page(spec.path("memes"), memes, by_ocr, final, new, threshold)
    atomic_write_text(out / "index.html", html_page)
    atomic_write_json(
        out / "scores.json",
        {
            "memes": len(final),
            "hateful": int(final.label.sum()),
            "threshold": threshold,
            "models": sorted(models),
            "reference_split": REFERENCE_SPLIT,
        },
    )
