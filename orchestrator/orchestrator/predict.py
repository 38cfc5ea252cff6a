"""The stage graph of `orchestrator predict` (pure data, no I/O): new memes scored by a run.

    predict/<tag>/intake ─┬─ …/extract/<checkpoint> ─┐
                          ├─ …/embed/<name> ─────────┼─ …/run/<m>/<run> ─ …/average/<m> ─┐
                          └──────────────────────────┘   (+ train/<m>/<run>/traindev)    │
                                                 …/scores (+ the run's ensemble and averages)

Every stage is a copy of the run's stage it mirrors with the new memes in place of the
prepared dataset: the extract and embed stages read the intake's memes; a run's predict stage
has the inputs and params of its traindev fit, plus that fit's output (`fit`) and the run's
prepared splits (`run_prepared`, to rebuild the tokenizer or fastText vectors of training);
the averages are the run's average stage over the predict stages; `scores` applies the run's
stored ensemble. All of it lives under `work/predict/<tag>/`, `tag` naming the input's path, so
scoring the same input again finds its records and runs nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hm_shared.dataset import PREDICT_SPLIT
from hm_shared.errors import HmDataError
from orchestrator.stages import InputRef, StageDef

PREDICT_ROOT = "work/predict"
SOURCE_KINDS = ("extract", "embed")  # stages that read the memes themselves: copied per input


@dataclass(frozen=True)
class PredictInput:
    """What the user gave: a folder of images, or a jsonl file (`folder` is then its folder)."""

    folder: Path
    jsonl: str | None = None
    # what the intake stage's key hashes: a jsonl and the images it names (relative to its
    # folder); None: the whole folder
    files: tuple[str, ...] | None = None

    @classmethod
    def of(cls, path: Path) -> PredictInput:
        path = Path(path).resolve()
        if path.is_dir():
            return cls(path)
        if path.is_file():
            if path.suffix != ".jsonl":
                raise HmDataError(
                    "expected a folder of images or a .jsonl file of memes "
                    '({"img": "…", "text": "…"} a line)',
                    path,
                )
            return cls(path.parent, path.name, (path.name, *_named_images(path)))
        raise HmDataError("not found; expected a folder of images or a .jsonl file", path)

    @property
    def tag(self) -> str:
        """12 hex digits of the input's absolute path: one work folder per input."""
        name = str(self.folder / self.jsonl) if self.jsonl else str(self.folder)
        return hashlib.sha256(name.encode()).hexdigest()[:12]


def _named_images(jsonl: Path) -> list[str]:
    """The `img` values of a jsonl's lines, once each; lines that are not memes are left to
    the intake stage, which names them in its error."""
    found: dict[str, None] = {}
    for line in jsonl.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("img"), str):
            found[obj["img"]] = None
    return sorted(found)


def predict_stages(
    run_stages: list[StageDef], models: tuple[str, ...], source: PredictInput, ocr: str
) -> list[StageDef]:
    """The stages that score `source` with the finished run `run_stages` of `models`."""
    by_id = {s.id: s for s in run_stages}
    base = f"{PREDICT_ROOT}/{source.tag}"
    prefix = f"predict/{source.tag}"
    profile = by_id["prepare"].profile
    intake = StageDef(
        id=f"{prefix}/intake",
        kind="intake",
        env="host",
        output=f"{base}/memes",
        inputs={"input": InputRef(str(source.folder), files=source.files)},
        params={"jsonl": source.jsonl, "ocr": ocr},
        profile=profile,
    )
    memes = InputRef(intake.output, intake.id)
    images = InputRef(intake.output, keyed_by="prepared")
    stages = [intake]
    # run output folder → (its copy's folder, the copy's id), for the extract and embed stages
    moved: dict[str, tuple[str, str]] = {}
    for stage in run_stages:
        if stage.kind not in SOURCE_KINDS:
            continue
        output = f"{base}/{stage.output.removeprefix('work/')}"
        copy = dataclasses.replace(
            stage,
            id=f"{prefix}/{stage.id}",
            output=output,
            inputs={**stage.inputs, "prepared": memes, "hm": images},
        )
        stages.append(copy)
        moved[stage.output] = (output, copy.id)

    def remap(ref: InputRef) -> InputRef:
        for old, (new, producer) in moved.items():
            if ref.path == old or ref.path.startswith(old + "/"):
                return InputRef(new + ref.path[len(old) :], producer, ref.files, ref.keyed_by)
        return ref

    for letter in models:
        runs: dict[str, InputRef] = {}
        for fit in (s for s in run_stages if s.kind == "train" and s.run and s.run.model == letter):
            if fit.run is None or fit.run.fit != "traindev":
                continue
            inputs = {name: remap(ref) for name, ref in fit.inputs.items()}
            inputs |= {
                "prepared": memes,
                "run_prepared": InputRef(by_id["prepare"].output, "prepare"),
                "fit": InputRef(fit.output, fit.id),
            }
            if "hm" in inputs:
                inputs["hm"] = images  # B reads the pictures themselves
            run = fit.run.run
            stage = dataclasses.replace(
                fit,
                id=f"{prefix}/run/{letter}/{run}",
                kind="predict",
                output=f"{base}/runs/{letter}/{run}",
                inputs=inputs,
                run=fit.run.model_copy(update={"predict": (PREDICT_SPLIT,), "valid": None}),
            )
            stages.append(stage)
            runs[f"run:{run}:predict"] = InputRef(stage.output, stage.id)
        stages.append(
            StageDef(
                id=f"{prefix}/average/{letter}",
                kind="average",
                env="host",
                output=f"{base}/preds/{letter}",
                inputs=runs,
                profile=profile,
            )
        )
    averaged = {
        f"model:{m}": InputRef(f"{base}/preds/{m}", f"{prefix}/average/{m}") for m in models
    }
    references = {
        f"reference:{m}": InputRef(by_id[f"average/{m}"].output, f"average/{m}") for m in models
    }
    stages.append(
        StageDef(
            id=f"{prefix}/scores",
            kind="scores",
            env="host",
            output=f"{base}/scores",
            inputs={
                "ensemble": InputRef(by_id["ensemble"].output, "ensemble"),
                "memes": memes,
                **averaged,
                **references,
            },
            profile=profile,
        )
    )
    return stages
