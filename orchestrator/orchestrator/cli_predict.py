"""`orchestrator predict`: score new memes with a finished run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import click

from hm_shared.intake import INTAKE_FILE
from hm_shared.io import atomic_open
from hm_shared.ocr import ENGINES
from orchestrator import api
from orchestrator.options import data_option, gpus_option, runtime_options, selection_options
from orchestrator.predict import PredictInput
from orchestrator.stages import Profile


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def write_output(scores: Path, out: Path, per_model: bool) -> list[Path]:
    """`out` (id,proba,label[,<model>…]), its page `<out>.html` and the texts the models read
    `<out>.texts.csv`, each written atomically; returns the paths."""
    rows = _rows(scores / "scores.csv")
    if per_model:
        models = {r[0]: r[1:] for r in _rows(scores / "models.csv")}
        rows = [row + models[row[0]] for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    written = [out]
    for name, suffix in (("index.html", ".html"), ("texts.csv", ".texts.csv")):
        target = out.with_suffix(suffix)
        with atomic_open(target, "wb") as handle, (scores / name).open("rb") as source:
            shutil.copyfileobj(source, handle)
        written.append(target)
    return written


@click.command("predict")
@click.option(
    "--input",
    "source",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A folder of images (png, jpg, webp), or a jsonl of memes: img (relative to the "
    "jsonl's folder), optional text and id.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write id,proba,label here (plus FILE's .html page and .texts.csv). [default: only "
    "the stage output under DATA/work/predict/]",
)
@click.option("--per-model", is_flag=True, help="Add each model's seed-averaged probability.")
@click.option(
    "--ocr",
    type=click.Choice(list(ENGINES)),
    default="tesseract",
    show_default=True,
    help="How a meme without text gets one: Tesseract OCR, or none (a meme without text is "
    "then an error).",
)
@selection_options(models_required=False)
@data_option
@runtime_options
@gpus_option
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Stages running at once. [default: the number of --gpus, or 1]",
)
def predict_command(
    source: Path,
    out: Path | None,
    per_model: bool,
    ocr: str,
    recipes: Path,
    models: str,
    topk: int | None,
    profile: Profile,
    data: Path,
    runtime: str,
    venvs: Path | None,
    gpus: tuple[str, ...],
    jobs: int | None,
) -> None:
    """Score new memes with the models of a finished run in DATA.

    The run is the one `orchestrator run` made with the same --models, --profile and --topk:
    each model's traindev fits, their seed average and the ensemble's stored blend and
    threshold. The new memes go through the same stages (intake and OCR, feature extraction,
    one predict stage per fit, averages, the blend), cached like a run's: the same command
    again runs nothing, and a killed one resumes.

    Example:

    \b
        orchestrator run --models B,U --profile smoke --topk 20 --synthetic
        orchestrator predict --models B,U --profile smoke --topk 20 --input memes/ --out s.csv
    """
    settings = api.Settings(data=data, recipes=recipes, venvs=venvs, runtime=runtime)
    selection = api.Selection(models=models, profile=profile, topk=topk)
    result = api.predict(
        settings, selection, PredictInput.of(source), ocr=ocr, gpus=gpus, jobs=jobs
    )
    outcome = result.outcome
    click.echo(f"{len(outcome.executed)} stage(s) ran, {len(outcome.cached)} cached")
    intake = json.loads((result.scores.parent / "memes" / INTAKE_FILE).read_text("utf-8"))
    if intake["skipped"]:
        shown = ", ".join(f"{s['file']} ({s['reason']})" for s in intake["skipped"][:5])
        more = " …" if len(intake["skipped"]) > 5 else ""
        click.echo(f"skipped {len(intake['skipped'])} file(s) of the input: {shown}{more}")
    if intake["ocr"]["read"]:
        version = intake["ocr"].get("version", "?")
        click.echo(f"{len(intake['ocr']['read'])} text(s) read by {ocr} {version}")
        blank = [i for i, text in intake["ocr"]["read"].items() if not text]
        if blank:  # scored on the picture and an empty text: say so, never silently
            shown = ", ".join(blank[:5]) + (" …" if len(blank) > 5 else "")
            click.echo(f"OCR found no text in {len(blank)} meme(s), scored without text: {shown}")
    click.echo(f"scores: {result.scores}/scores.csv (page: index.html)")
    if out is not None:
        for path in write_output(result.scores, out, per_model):
            click.echo(f"wrote {path}")
