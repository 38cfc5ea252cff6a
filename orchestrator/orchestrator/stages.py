"""The stage graph of a selection: pure data built from the recipes (no I/O).

    prepare ─┬─ extract/<checkpoint> ─┬─ pretrain/<m>/<run> ─┐
             │                         └──────────────────────┴─ train/<m>/<run>/{train,traindev}
             ├─ embed/<name> ───────────────────────────────────┤            │
             └───────────────────────────────────────────────────┘            │
                                                                average/<m> ──┴─ ensemble ── report

Extract stages exist only for the detector checkpoints ("attr", "plain") of the variants that
the selected models' runs name, once each, shared between models; each writes every variant of
its checkpoint (`work/features/<checkpoint>/<variant>/`). A model with a pretrain section gets
one pretrain stage per run (with that run's seed and features, as vilio's per-run bash
scripts), feeding both of its fits. An embed stage runs once per `[embed.<name>]` that a
selected model reads (C: frozen CLIP features of every prepared meme). A model with
`traindev_epochs_from_train` gets its traindev fit after its train fit (input `train_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hm_shared.spec import WEIGHT_INPUT, RunSpec, StageKind
from orchestrator.datadir import TIMINGS_FILE
from orchestrator.recipes import DETECTOR_WEIGHTS, Recipes, Weight

Profile = Literal["smoke", "full"]
Kind = StageKind

# fit → the splits its stage predicts (docs/architecture.md §2.2)
FITS: dict[str, tuple[str, ...]] = {
    "train": ("dev_seen",),
    "traindev": ("test_seen", "test_unseen"),
}
# fit → the split it validates on (early stopping, dev AUROC in the log). dev_seen is inside
# traindev, so the traindev fit has none: it runs its full schedule (upstream logs dev_seen
# there, which is only training data).
VALID: dict[str, str | None] = {"train": "dev_seen", "traindev": None}
ACCELERATED: frozenset[str] = frozenset({"extract", "embed", "pretrain", "train", "predict"})


@dataclass(frozen=True)
class InputRef:
    """An input of a stage: a path under the data root, produced by a stage or external.

    External inputs (`producer is None`) are hashed by content; `files` narrows the hash to the
    named files under `path` (the weights a stage actually reads, not all of data/weights).
    `keyed_by` names another input of the stage whose hash already covers what the stage reads
    here: the images of data/hm that a stage reads are those of the prepared memes, whose hashes
    the prepare stage lists in `images.json`; a byte changed elsewhere in data/hm (a meme outside
    --topk, a text no stage reads) then reruns prepare alone.
    `run_facts` marks a file the executor writes from the run's records just before the stage
    starts (the report's stage timings): facts about this run, not content, so never keyed.
    """

    path: str
    producer: str | None = None
    files: tuple[str, ...] | None = None
    keyed_by: str | None = None
    run_facts: bool = False

    @property
    def ident(self) -> str:
        return self.path if self.files is None else f"{self.path}[{','.join(self.files)}]"


@dataclass(frozen=True)
class StageDef:
    id: str  # "train/B/B42/train"
    kind: Kind
    env: str  # "host" | "extract" | "torch" | "paddle"
    output: str  # relative to the data root
    inputs: dict[str, InputRef] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    # the training engine's settings among the recipe's params; `accepted.accept_params` moves
    # them here by the table the stage's environment publishes
    engine: dict[str, Any] = field(default_factory=dict)
    run: RunSpec | None = None  # which model run (pretrain, train and predict stages)
    profile: Profile = "smoke"
    weights: tuple[Weight, ...] = ()  # files the full profile requires under data/weights
    # SLURM resources the recipe gives this stage ([slurm.<kind>], then [models.X.slurm]);
    # where a stage runs is not part of its key
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.id.replace("/", "-")

    @property
    def verb(self) -> str:
        return self.kind

    @property
    def needs_accelerator(self) -> bool:
        return self.kind in ACCELERATED

    @property
    def keyed_inputs(self) -> dict[str, InputRef]:
        """The inputs whose hashes make the cache key (`InputRef.keyed_by`, `run_facts`)."""
        return {
            name: ref
            for name, ref in self.inputs.items()
            if ref.keyed_by is None and not ref.run_facts
        }

    @property
    def deps(self) -> list[str]:
        return sorted({ref.producer for ref in self.inputs.values() if ref.producer})


def _weight_inputs(weights: tuple[Weight, ...], profile: Profile) -> dict[str, InputRef]:
    """One input per weight file the recipe lists (`weights:<file>`, read by the stage with
    `spec.weight`), full profile only: the smoke profile reads no released file, so a file
    dropped into data/weights never changes a smoke key."""
    if profile != "full":
        return {}
    return {f"{WEIGHT_INPUT}{w.file}": InputRef(f"weights/{w.file}") for w in weights}


def _merged(
    base: dict[str, Any], smoke: dict[str, Any], full: dict[str, Any], profile: Profile
) -> dict[str, Any]:
    """The params of a profile: the common table, then the profile's own (`smoke`: small
    random models; `full`: what only the released files give, such as a checkpoint's name)."""
    return {**base, **(smoke if profile == "smoke" else full)}


def features_input(recipes: Recipes, variant: str) -> InputRef:
    """A variant's store: a folder of its checkpoint's extract stage output."""
    weights = recipes.extract[variant].weights
    return InputRef(f"work/features/{weights}/{variant}", f"extract/{weights}")


def _extract_stage(
    recipes: Recipes, weights: str, profile: Profile, prepared: InputRef, images: InputRef
) -> StageDef:
    """One detector pass per image for every variant the recipes declare on checkpoint
    `weights`, wanted by the selected models or not: a model added later that needs another
    of them then runs no detector pass (the selection is cheap; docs/architecture.md §2)."""
    detector = DETECTOR_WEIGHTS[weights]
    variants = {
        name: {"min_boxes": spec.min_boxes, "max_boxes": spec.max_boxes}
        for name, spec in sorted(recipes.extract.items())
        if spec.weights == weights
    }
    return StageDef(
        id=f"extract/{weights}",
        kind="extract",
        env="extract",
        output=f"work/features/{weights}",
        inputs={"prepared": prepared, "hm": images, **_weight_inputs((detector,), profile)},
        # `detector`: the released file (full profile); without it the detector is random
        params={
            "weights": weights,
            "variants": variants,
            **({"detector": detector.file} if profile == "full" else {}),
        },
        profile=profile,
        weights=(detector,),
        resources=_resources(recipes, "extract", None),
    )


def _embed_stage(
    recipes: Recipes, name: str, profile: Profile, prepared: InputRef, images: InputRef
) -> StageDef:
    embedder = recipes.embed[name]
    weights = tuple(embedder.weights)
    return StageDef(
        id=f"embed/{name}",
        kind="embed",
        env=embedder.env,
        output=f"work/embeddings/{name}",
        inputs={
            "prepared": prepared,
            "hm": images,
            **_weight_inputs(weights, profile),
        },
        params=_merged(embedder.params, embedder.smoke, embedder.full, profile),
        profile=profile,
        weights=weights,
        resources=_resources(recipes, "embed", None),
    )


def _resources(recipes: Recipes, kind: str, letter: str | None) -> dict[str, Any]:
    given = recipes.slurm.get(kind)  # type: ignore[call-overload]
    model = recipes.models[letter].slurm if letter else None
    return {**(given.given() if given else {}), **(model.given() if model else {})}


def _model_stages(
    letter: str, recipes: Recipes, profile: Profile, prepared: InputRef, images: InputRef
) -> list[StageDef]:
    model = recipes.models[letter]
    stages: list[StageDef] = []
    weights = tuple(model.weights)
    common: dict[str, InputRef] = {"prepared": prepared, **_weight_inputs(weights, profile)}
    average_inputs: dict[str, InputRef] = {}
    if model.embeddings:
        common["embeddings"] = InputRef(
            f"work/embeddings/{model.embeddings}", f"embed/{model.embeddings}"
        )
    for run in model.runs:
        run_inputs = dict(common)
        if not run.features and not model.embeddings:
            run_inputs["hm"] = images  # B reads the pictures; the others features or embeddings
        named = {"features": run.features, "extra_features": run.extra_features}
        for name, variant in named.items():
            if variant:
                run_inputs[name] = features_input(recipes, variant)
        if model.pretrain is not None:
            pretrain = StageDef(
                id=f"pretrain/{letter}/{run.name}",
                kind="pretrain",
                env=model.env,
                output=f"work/pretrain/{letter}/{run.name}",
                inputs=dict(run_inputs),
                params=_merged(
                    model.pretrain.params, model.pretrain.smoke, model.pretrain.full, profile
                ),
                run=RunSpec(model=letter, run=run.name, seed=run.seed, features=run.features),
                profile=profile,
                weights=weights,
                resources=_resources(recipes, "pretrain", letter),
            )
            stages.append(pretrain)
            run_inputs["pretrained"] = InputRef(pretrain.output, pretrain.id)
        for fit, predict in FITS.items():
            inputs = dict(run_inputs)
            if fit == "traindev" and model.traindev_epochs_from_train:
                inputs["train_fit"] = average_inputs[f"run:{run.name}:train"]
            params = {
                **_merged(model.params, model.smoke, model.full, profile),
                **_merged(run.params, {}, run.full, profile),
            }
            identity = RunSpec(
                model=letter,
                run=run.name,
                seed=run.seed,
                fit=fit,
                predict=predict,
                valid=VALID[fit],
                features=run.features,
                extra_features=run.extra_features,
            )
            if VALID[fit] is None and params.get("early_stopping"):
                params["early_stopping"] = 0  # nothing held out to stop on: full schedule
            stage = StageDef(
                id=f"train/{letter}/{run.name}/{fit}",
                kind="train",
                env=model.env,
                output=f"work/runs/{letter}/{run.name}/{fit}",
                inputs=inputs,
                params=params,
                run=identity,
                profile=profile,
                weights=weights,
                resources=_resources(recipes, "train", letter),
            )
            stages.append(stage)
            average_inputs[f"run:{run.name}:{fit}"] = InputRef(stage.output, stage.id)
    stages.append(
        StageDef(
            id=f"average/{letter}",
            kind="average",
            env="host",
            output=f"work/preds/{letter}",
            inputs=average_inputs,
            profile=profile,
        )
    )
    return stages


def build_stages(
    recipes: Recipes, models: tuple[str, ...], profile: Profile, topk: int | None = None
) -> list[StageDef]:
    """Every stage needed for `models`, in a topological order (producers before consumers)."""
    prepare = StageDef(
        id="prepare",
        kind="prepare",
        env="host",
        output="work/prepared",
        inputs={"hm": InputRef("hm")},
        params={"topk": topk},
        profile=profile,
    )
    prepared = InputRef(prepare.output, prepare.id)
    images = InputRef("hm", keyed_by="prepared")
    stages = [prepare]
    needed = dict.fromkeys(v for m in models for v in recipes.models[m].variants())
    for weights in dict.fromkeys(recipes.extract[v].weights for v in needed):
        stages.append(_extract_stage(recipes, weights, profile, prepared, images))
    for name in dict.fromkeys(recipes.models[m].embeddings for m in models):
        if name:
            stages.append(_embed_stage(recipes, name, profile, prepared, images))
    for letter in models:
        stages += _model_stages(letter, recipes, profile, prepared, images)
    preds = {f"model:{m}": InputRef(f"work/preds/{m}", f"average/{m}") for m in models}
    ensemble = StageDef(
        id="ensemble",
        kind="ensemble",
        env="host",
        output="work/ensemble",
        inputs={"prepared": prepared, **preds},
        profile=profile,
    )
    report = StageDef(
        id="report",
        kind="report",
        env="host",
        output="work/report",
        inputs={
            "prepared": prepared,
            "ensemble": InputRef(ensemble.output, ensemble.id),
            **preds,
            "timings": InputRef(TIMINGS_FILE, run_facts=True),
        },
        profile=profile,
    )
    return [*stages, ensemble, report]


def required_weights(stages: list[StageDef]) -> list[Weight]:
    """The distinct weight files the full profile needs for these stages, in stage order."""
    seen: dict[str, Weight] = {}
    for stage in stages:
        for weight in stage.weights:
            seen.setdefault(weight.file, weight)
    return list(seen.values())
