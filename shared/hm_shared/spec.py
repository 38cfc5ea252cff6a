"""The stage spec: what the orchestrator hands a stage process (docs/architecture.md §2.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from hm_shared.errors import MissingWeightsError, SpecError
from hm_shared.io import atomic_write_text

# 2: `run` out of `params`, no `context` (timings are an input); 3: `engine` out of `params`
SPEC_FORMAT_VERSION = 3
SPEC_FILE = "spec.json"
# The input of one weight file (or folder) the recipe lists: "weights:<file>" → weights/<file>
WEIGHT_INPUT = "weights:"
# Facts about how a stage's output was made (counters such as the extract stage's detector
# passes), written beside it: not its content, so left out of the output hash and file list.
STATS_FILE = "stats.json"
# Every kind of stage; the orchestrator's stage graph uses the same list.
StageKind = Literal[
    "prepare",
    "extract",
    "embed",
    "pretrain",
    "train",
    "average",
    "ensemble",
    "report",
    "intake",  # the stages of `orchestrator predict`
    "predict",
    "scores",
]


class RunSpec(BaseModel):
    """Which run a pretrain, train or predict stage is: one row of the recipe's model (its run
    name, seed and feature variants), the fit and the splits it validates on and predicts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str  # the recipe letter ("U", "ES")
    run: str  # the run row's name ("U36")
    seed: int
    fit: Literal["train", "traindev"] | None = None  # None: a pretrain stage
    predict: tuple[str, ...] = ()  # splits to write predictions for
    valid: str | None = None  # the held-out split (early stopping, dev metrics)
    features: str | None = None  # the feature variants of the run row
    extra_features: str | None = None


class StageSpec(BaseModel):
    """What one stage process is told. Its parts:

    - `run`: which model run it is (set on the stages of one model run and on no other);
    - `params`: the recipe's params of the stage (a model's hyper-parameters, a feature
      variant's box counts);
    - `engine`: the training engine's settings (`lr`, `epochs`, `batch_size`, …) that the
      recipe gives beside the model's params, told apart by the environment's published table
      (`hm_shared.accepted`); empty on stages that train nothing;
    - `inputs`: every path the stage reads, by name, the weight files the recipe lists among
      them (`weight`).
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = SPEC_FORMAT_VERSION
    stage: str
    kind: StageKind
    env: Literal["host", "extract", "torch", "paddle"]
    data_root: str
    output: str
    inputs: dict[str, str] = {}
    params: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    run: RunSpec | None = None
    profile: Literal["smoke", "full"] = "smoke"
    device: Literal["cpu", "cuda"] = "cpu"

    @property
    def root(self) -> Path:
        return Path(self.data_root)

    @property
    def output_dir(self) -> Path:
        return self.root / self.output

    def path(self, name: str) -> Path:
        """Absolute path of the input `name`; a clear error when the spec lacks it."""
        if name not in self.inputs:
            raise SpecError(
                f"stage {self.stage}: spec has no input {name!r}; it has {sorted(self.inputs)}"
            )
        return self.root / self.inputs[name]

    def weight(self, file: str, what: str) -> Path:
        """The weight `file` under data/weights: one the recipe's weights list gives this stage
        (an input `weights:<file>`), or a folder holding such files (a Hugging Face checkpoint
        directory). MissingWeightsError naming it when it is not given or not on disk."""
        given = sorted(
            n.removeprefix(WEIGHT_INPUT) for n in self.inputs if n.startswith(WEIGHT_INPUT)
        )
        if file in given:
            path = self.path(WEIGHT_INPUT + file)
        elif any(g.startswith(file.rstrip("/") + "/") for g in given):
            path = self.root / "weights" / file
        else:
            raise MissingWeightsError(
                f"stage {self.stage}: {what} {file!r} is not among the weight files the recipe "
                f"gives this stage ({', '.join(given) or 'none: the smoke profile reads none'}); "
                "list it in the model's `weights` in recipes.toml"
            )
        if not path.exists():
            raise MissingWeightsError(
                f"{what} not found; `orchestrator weights fetch` downloads it (recipes.toml "
                "says from where)",
                path,
            )
        return path

    def paths_named(self, prefix: str) -> dict[str, Path]:
        """The inputs named `<prefix><name>` as {name: absolute path}, in name order (the
        per-model inputs of the ensemble and scores stages: "model:U" → "U")."""
        names = sorted(n for n in self.inputs if n.startswith(prefix))
        return {n.removeprefix(prefix): self.path(n) for n in names}

    @property
    def model_run(self) -> RunSpec:
        """`run`, or a clear error on a stage that is no model run's."""
        if self.run is None:
            raise SpecError(f"stage {self.stage}: a {self.kind} stage's spec needs `run`")
        return self.run

    def param(self, name: str) -> Any:
        if name not in self.params:
            raise SpecError(
                f"stage {self.stage}: spec has no param {name!r}; it has {sorted(self.params)}"
            )
        return self.params[name]

    def write(self, path: Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")


def load_spec(path: Path) -> StageSpec:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: cannot read stage spec: {exc}") from exc
    if raw.get("format_version") != SPEC_FORMAT_VERSION:
        raise SpecError(
            f"{path}: format_version {raw.get('format_version')!r}, expected {SPEC_FORMAT_VERSION}"
        )
    try:
        return StageSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: invalid stage spec:\n{exc}") from exc
