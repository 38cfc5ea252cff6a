"""The recipe file (docs/architecture.md §7): one flat TOML, validated by pydantic.

Every table is closed (`extra="forbid"`), so a misspelt key is an error naming the key and the
file. Model sections are added by the engineers of each model; the schema only insists that a
model has at least one run and that every feature variant it names is declared.
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import RecipeError, UnknownModelError

DEFAULT_RECIPES = Path(__file__).with_name("recipes.toml")


class Weight(BaseModel):
    """A pretrained file (or directory) under data/weights and where to get it: the URL
    `source`, or the `member` of the archive at that URL (matched by path suffix);
    `orchestrator weights fetch` downloads it."""

    model_config = ConfigDict(extra="forbid")

    file: str
    source: str = Field(pattern=r"^(https?|file)://\S+$")
    member: str | None = None
    note: str | None = None  # what a user must know to get it (a token, a licence)
    # `source` is a page to download from by hand (a file host behind a confirmation page):
    # `weights fetch` names it with the note instead of downloading
    manual: bool = False
    # checksum published upstream: the sha256 or its first ≥ 8 hex digits (torchvision's
    # file names carry those); checked after download and whenever plan/run start
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,64}$")

    @model_validator(mode="after")
    def _manual_has_note(self) -> Weight:
        if self.manual and not self.note:
            raise ValueError(f"weight {self.file!r} is manual: give a note saying how to get it")
        if self.manual and self.member:
            raise ValueError(f"weight {self.file!r} is manual: it cannot name an archive member")
        if self.sha256 and self.member:
            raise ValueError(f"weight {self.file!r}: pin the archive member's file, not sha256")
        return self

    @field_validator("file", "member")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        path = PurePosixPath(value) if value is not None else None
        if path is not None and (path.is_absolute() or ".." in path.parts or not path.parts):
            raise ValueError(f"expected a relative path without '..', got {value!r}")
        return value

    def where(self) -> str:
        """`source`, with the archive member and the note when there are."""
        text = self.source + (f", {self.member} inside the archive" if self.member else "")
        return text + (f"; {self.note}" if self.note else "")


# The detector checkpoints behind `extract.<variant>.weights` (upstream.md: vilio uses the
# 36-box "alternative pretrained" models for every box count).
DETECTOR_WEIGHTS: dict[str, Weight] = {
    "attr": Weight(
        file="faster_rcnn_from_caffe_attr.pkl",
        source="http://nlp.cs.unc.edu/models/faster_rcnn_from_caffe_attr.pkl",
    ),
    "plain": Weight(
        file="faster_rcnn_from_caffe.pkl",
        source="http://nlp.cs.unc.edu/models/faster_rcnn_from_caffe.pkl",
    ),
}


class ExtractVariant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: Literal["attr", "plain"]
    min_boxes: int = Field(ge=1)
    max_boxes: int = Field(ge=1)

    @model_validator(mode="after")
    def _boxes_ordered(self) -> ExtractVariant:
        if self.min_boxes > self.max_boxes:
            raise ValueError(f"min_boxes {self.min_boxes} > max_boxes {self.max_boxes}")
        return self


class SlurmResources(BaseModel):
    """What a SLURM job asks for (`--executor slurm`); unset fields keep the default."""

    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(default=None, ge=1)
    mem: str | None = Field(default=None, pattern=r"^[0-9]+[KMGT]?$")
    time: str | None = Field(default=None, pattern=r"^[0-9:-]+$")
    gpus: int | None = Field(default=None, ge=0)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Run(BaseModel):
    """One seed × feature set; gives a `train` and a `traindev` stage."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int
    features: str | None = None
    extra_features: str | None = None
    params: dict[str, Any] = {}
    full: dict[str, Any] = {}  # this run's params of the full profile only (a released file)


class Pretrain(BaseModel):
    """Task pre-training, run once per run (vilio's bash scripts pre-train again before every
    fine-tuning run, with that run's seed and feature set)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = {}
    smoke: dict[str, Any] = {}
    full: dict[str, Any] = {}


class Embedder(BaseModel):
    """A frozen encoder run once over every prepared meme (`[embed.<name>]`, stage
    `embed/<name>`): the input of models that train on its vectors instead of region features."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    env: Literal["torch"] = "torch"
    weights: list[Weight] = []
    params: dict[str, Any] = {}
    smoke: dict[str, Any] = {}
    full: dict[str, Any] = {}


class ModelRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    env: Literal["torch", "paddle"]
    weights: list[Weight] = []
    params: dict[str, Any] = {}
    smoke: dict[str, Any] = {}
    full: dict[str, Any] = {}
    runs: list[Run] = Field(min_length=1)
    pretrain: Pretrain | None = None
    slurm: SlurmResources | None = None  # this model's pretrain/train jobs (e.g. EL: longer)
    embeddings: str | None = None  # an [embed.<name>] whose store the runs read (model C)
    # the traindev fit trains as many epochs as the train fit's early stopping kept
    traindev_epochs_from_train: bool = False

    @model_validator(mode="after")
    def _unique_runs(self) -> ModelRecipe:
        names = [run.name for run in self.runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"run names must be unique, repeated: {duplicates}")
        return self

    def variants(self) -> list[str]:
        """Feature variants this model's runs read, in recipe order."""
        named: list[str | None] = []
        for run in self.runs:
            named += [run.features, run.extra_features]
        return list(dict.fromkeys(v for v in named if v is not None))


class Recipes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extract: dict[str, ExtractVariant] = {}
    embed: dict[str, Embedder] = {}
    models: dict[str, ModelRecipe] = {}
    # [slurm.extract], [slurm.embed], [slurm.pretrain], [slurm.train]: the jobs of a stage kind
    slurm: dict[Literal["extract", "embed", "pretrain", "train"], SlurmResources] = {}

    @model_validator(mode="after")
    def _variants_declared(self) -> Recipes:
        for letter, model in self.models.items():
            for variant in model.variants():
                if variant not in self.extract:
                    raise ValueError(
                        f"models.{letter} names feature variant {variant!r}, which has no "
                        f"[extract.{variant}] table; declared: {sorted(self.extract)}"
                    )
            if model.embeddings is not None and model.embeddings not in self.embed:
                raise ValueError(
                    f"models.{letter} reads embeddings {model.embeddings!r}, which has no "
                    f"[embed.{model.embeddings}] table; declared: {sorted(self.embed)}"
                )
            if model.traindev_epochs_from_train and not model.params.get("early_stopping"):
                raise ValueError(
                    f"models.{letter}: traindev_epochs_from_train needs early_stopping in "
                    "its params (the train fit's kept epoch fixes the traindev schedule)"
                )
        return self

    def select(self, models: str) -> tuple[str, ...]:
        """Parse `--models B,U` (or `all`) into letters in recipe order; unknown ones: error."""
        if models.strip() == "all":
            return tuple(self.models)
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in self.models]
        if unknown or not wanted:
            raise UnknownModelError(
                f"unknown model {', '.join(unknown) or repr(models)}; "
                f"known models: {', '.join(self.models)} (or 'all')"
            )
        return tuple(m for m in self.models if m in wanted)


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{path}: {where}: {err['msg']}")
    return "\n".join(lines)


def load_recipes(path: Path = DEFAULT_RECIPES) -> Recipes:
    """Read and validate a recipe file; every problem names the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Recipes.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_format_errors(path, exc)) from None
