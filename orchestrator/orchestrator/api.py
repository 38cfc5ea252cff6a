"""The library behind the CLI: plan, run, status and environment builds over one data dir."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.console import Console

from hm_shared.errors import HmDataError, HmError, MissingWeightsError
from orchestrator import cache, weights, weights_lock
from orchestrator.accepted import accept_params
from orchestrator.datadir import DataDir
from orchestrator.errors import EnvBuildError
from orchestrator.executor import Executor, OnError, Outcome
from orchestrator.gpus import resolve_gpus
from orchestrator.lock import DataLock
from orchestrator.plan import Fingerprints, PlannedStage, plan
from orchestrator.predict import PredictInput, predict_stages
from orchestrator.progress import RunProgress
from orchestrator.recipes import DEFAULT_RECIPES, Weight, load_recipes
from orchestrator.records import Record, read_record
from orchestrator.runtimes import Runtime, RuntimeConfig, Say, make_runtime
from orchestrator.runtimes.local import LocalRuntime
from orchestrator.slurm import SlurmOptions
from orchestrator.stages import Profile, StageDef, build_stages, required_weights
from orchestrator.weights import FetchResult, present

REPO = Path(__file__).resolve().parents[2]
ENVS = ("extract", "torch", "paddle")


@dataclass(frozen=True)
class Settings:
    """Where things are: the data dir, the recipe file, the repository and the venvs root."""

    data: Path
    recipes: Path = DEFAULT_RECIPES
    repo: Path = REPO
    venvs: Path | None = None
    runtime: str = "local"

    @property
    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(repo=self.repo, venvs=self.venvs or self.repo / ".venvs")


@dataclass(frozen=True)
class Selection:
    """What to run: `models` as typed on the command line ("B,U" or "all")."""

    models: str
    profile: Profile = "full"
    topk: int | None = None


@dataclass
class PlanResult:
    data: DataDir
    models: tuple[str, ...]
    stages: list[StageDef]
    planned: list[PlannedStage]
    hashes: Fingerprints
    missing_weights: list[Weight]
    dataset_present: bool
    changed_weights: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    outcome: Outcome
    fin_files: list[Path] = field(default_factory=list)
    report: Path | None = None


@dataclass(frozen=True)
class StageStatus:
    stage: StageDef
    state: str  # done | changed | failed | incomplete | missing
    output: Path
    problem: str | None  # what is wrong with the output on disk (cache.output_problem)
    record: Record | None


def select_stages(
    settings: Settings, selection: Selection
) -> tuple[tuple[str, ...], list[StageDef]]:
    recipes = load_recipes(settings.recipes)
    models = recipes.select(selection.models)
    stages = build_stages(recipes, models, selection.profile, selection.topk)
    # before anything runs: a misspelt param stops plan; the engine's settings are told apart
    return models, accept_params(stages, settings.repo, settings.recipes)


def missing_weights(data: DataDir, stages: list[StageDef]) -> list[Weight]:
    return [w for w in required_weights(stages) if not present(data.weights / w.file)]


def fetch_weights(settings: Settings, models: str, say: Say) -> FetchResult:
    """Download the pretrained files the full profile of `models` needs and does not have."""
    _, stages = select_stages(settings, Selection(models=models, profile="full"))
    data = DataDir(settings.data)
    wanted = required_weights(stages)
    hashes = cache.HashCache(data.root, data.hashes)
    changed = weights_lock.problems(data.weights, wanted, hashes)  # never record over a change
    if changed:
        raise weights_lock.changed_weights_error(data.weights, changed, models)
    result = weights.fetch_weights(data.weights, wanted, say)
    weights_lock.record(data.weights, wanted, hashes)
    if result.by_hand:  # everything else is in place; these need a person
        lines = [f"  {data.weights / w.file}  (from {w.source}: {w.note})" for w in result.by_hand]
        raise MissingWeightsError(
            f"{len(result.fetched)} fetched; {len(result.by_hand)} file(s) cannot be downloaded "
            "by URL, get them by hand and put them here:\n" + "\n".join(lines),
            path=data.weights,
        )
    return result


def missing_weights_error(data: DataDir, missing: list[Weight]) -> MissingWeightsError:
    lines = [f"  {data.weights / w.file}  (get it from {w.where()})" for w in missing]
    return MissingWeightsError(
        f"the full profile needs {len(missing)} pretrained file(s) that are missing:\n"
        + "\n".join(lines)
        + "\nput them there, or run with --profile smoke (tiny random-initialised models)",
        path=data.weights,
    )


def fingerprints(settings: Settings, data: DataDir, stages: list[StageDef]) -> Fingerprints:
    envs = sorted({s.env for s in stages})
    hashes = cache.HashCache(data.root, data.hashes)
    return Fingerprints(
        inputs=cache.fingerprint_inputs(stages, hashes),
        env_locks={env: cache.env_lock_hash(settings.repo, env) for env in envs},
        code={env: cache.code_version(settings.repo, env) for env in envs},
    )


def _plan_now(
    settings: Settings, data: DataDir, stages: list[StageDef]
) -> tuple[Fingerprints, list[PlannedStage]]:
    """The fingerprints of `stages`' inputs and what each stage would do, from the records and
    outputs on disk now (the one sequence behind `plan`, `run` and `predict`)."""
    hashes = fingerprints(settings, data, stages)
    records = {s.id: read_record(data, s.slug) for s in stages}
    problems = cache.output_problems(data.root, stages, records)
    return hashes, plan(stages, records, hashes, problems)


def make_plan(settings: Settings, selection: Selection) -> PlanResult:
    """Plan without running or locking (hashes.json may be refreshed, atomically)."""
    data = DataDir(settings.data)
    models, stages = select_stages(
        settings, selection
    )  # a bad recipe first: nothing to do with data
    if not data.root.is_dir():
        raise no_data_dir_error(data)
    hashes, planned = _plan_now(settings, data, stages)
    missing = missing_weights(data, stages) if selection.profile == "full" else []
    changed = changed_weights(data, stages) if selection.profile == "full" else []
    return PlanResult(
        data,
        models,
        stages,
        planned,
        hashes,
        missing,
        data.has_dataset(),
        changed,
    )


def changed_weights(data: DataDir, stages: list[StageDef]) -> list[str]:
    """Weights that differ from the lock `weights fetch` wrote, or from a pinned checksum."""
    hashes = cache.HashCache(data.root, data.hashes)
    found = weights_lock.problems(data.weights, required_weights(stages), hashes)
    hashes.save()
    return found


def no_data_dir_error(data: DataDir) -> HmDataError:
    return HmDataError(
        "the data directory does not exist; expected a folder holding the dataset in hm/ "
        "(a typo in --data?), or pass --synthetic to create it with the synthetic dataset",
        data.root,
    )


def ensure_dataset(data: DataDir, say: Say, synthetic: bool = False) -> bool:
    """Generate the embedded synthetic dataset into data/hm when it is an empty folder, or when
    asked (`synthetic`) and there is none. A missing hm/ is otherwise an error: a mistyped
    --data must not quietly turn into a run on synthetic memes."""
    if data.has_dataset():
        return False
    if not synthetic and not data.hm.is_dir():
        raise HmDataError(
            "no dataset here; expected the Hateful Memes files (train.jsonl, dev_seen.jsonl, …, "
            "img/), an empty folder to generate the synthetic dataset into, or --synthetic",
            data.hm,
        )
    from hm_shared import synthetic as generator

    say(f"no dataset in {data.hm}: generating the synthetic dataset there (seed 0) …")
    # written beside data/hm and renamed onto it: a kill mid-way never leaves a partial
    # dataset that a later run would take for the user's
    partial = data.root / f".hm.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    generator.generate(partial, seed=0)
    if data.hm.is_dir():
        data.hm.rmdir()  # empty (has_dataset is False)
    os.replace(partial, data.hm)
    for stale in data.root.glob(".hm.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed generation
    say(f"synthetic dataset written to {data.hm}")
    return True


def runtime_problems(
    settings: Settings, planned: list[PlannedStage], gpus: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """(what `run` would stop on before any stage, notes) for this runtime and these GPUs: the
    GPU pre-flight and, under docker, the engine and the images of the environments with stages
    to run. The local runtime builds a missing venv itself: a note names it."""
    problems: list[str] = []
    notes: list[str] = []
    chosen = make_runtime(settings.runtime, settings.runtime_config)
    try:
        chosen.check_gpus(resolve_gpus(gpus))
    except HmError as exc:
        problems.append(str(exc))
    for env in sorted({p.stage.env for p in planned if p.action == "run"} - {"host"}):
        if isinstance(chosen, LocalRuntime):
            if not chosen.is_current(env):
                venv = settings.runtime_config.venvs / env
                notes.append(f"{venv} is missing or stale: `run` builds it first (minutes)")
            continue
        try:
            chosen.ensure(env, lambda _: None)
        except HmError as exc:
            problems.append(str(exc))
    return problems, notes


def runtime_resolver(settings: Settings) -> Callable[[str], Runtime]:
    """Host stages always run with the host interpreter; the rest with the chosen runtime."""
    chosen = make_runtime(settings.runtime, settings.runtime_config)
    host = make_runtime("local", settings.runtime_config)
    return lambda env: host if env == "host" else chosen


def run(
    settings: Settings,
    selection: Selection,
    console: Console | None = None,
    gpus: tuple[str, ...] = (),
    jobs: int | None = None,
    on_error: OnError = "fail",
    synthetic: bool = False,
    slurm: SlurmOptions | None = None,
) -> RunResult:
    """Check weights (full profile), lock the data dir, make sure a dataset exists, plan, execute.

    `synthetic`: create the data dir and generate the synthetic dataset when it has none.
    Progress and messages go to `console` (stderr by default).
    """
    console = console or Console(stderr=True, soft_wrap=True)
    data = DataDir(settings.data)
    _, stages = select_stages(settings, selection)
    if not synthetic and not data.root.is_dir():
        raise no_data_dir_error(data)  # before the lock, which would create it
    check_weights(data, stages, selection)
    if slurm is not None and settings.runtime == "docker":
        wants_gpu = slurm.gpus or any(s.resources.get("gpus") for s in stages)
        if wants_gpu:  # the compose GPU service must name the GPU SLURM chose
            raise HmError(
                "--executor slurm with GPUs runs stages through --runtime local (venvs on a "
                "file system the nodes share); --runtime docker there is CPU-only for now"
            )
    if slurm is not None and gpus:
        raise HmError("--gpus leases GPUs of this machine; under SLURM use --slurm-gpus N")
    resolve = runtime_resolver(settings)
    gpus = resolve_gpus(gpus)
    resolve("extract").check_gpus(gpus)  # the chosen runtime: can it hand out these GPUs?
    with DataLock(data.lock, data.root):
        ensure_dataset(data, partial(console.print, highlight=False), synthetic)
        hashes, planned = _plan_now(settings, data, stages)
        with RunProgress(len(planned), console) as progress:
            executor = Executor(
                data,
                resolve,
                hashes,
                progress,
                jobs=jobs or max(1, len(gpus)),
                gpus=gpus,
                on_error=on_error,
                slurm=slurm,
            )
            outcome = executor.execute(planned)
    ensemble, report = data.root / "work/ensemble", data.root / "work/report/index.html"
    return RunResult(
        outcome, sorted(ensemble.glob("FIN_*.csv")), report if report.is_file() else None
    )


def check_weights(data: DataDir, stages: list[StageDef], selection: Selection) -> None:
    """The full profile's pre-flight: every pretrained file present and as fetched."""
    if selection.profile != "full":
        return
    missing = missing_weights(data, stages)
    if missing:
        raise missing_weights_error(data, missing)
    changed = changed_weights(data, stages)
    if changed:
        raise weights_lock.changed_weights_error(data.weights, changed, selection.models)


def run_command_line(data: DataDir, selection: Selection) -> str:
    """The `orchestrator run` command of `selection` over `data`, as a user would type it."""
    topk = f" --topk {selection.topk}" if selection.topk is not None else ""
    return (
        f"orchestrator run --models {selection.models} --profile {selection.profile}{topk} "
        f"--data {data.root}"
    )


@dataclass
class PredictResult:
    outcome: Outcome
    scores: Path  # the scores stage's output folder


def predict(
    settings: Settings,
    selection: Selection,
    source: PredictInput,
    ocr: str = "tesseract",
    console: Console | None = None,
    gpus: tuple[str, ...] = (),
    jobs: int | None = None,
) -> PredictResult:
    """Score the memes of `source` with the finished run of `selection` in the data dir.

    Every stage of the run must be done and current (cached); otherwise nothing runs and the
    error names the command that trains the models. The predict stages then run like a run's.
    """
    console = console or Console(stderr=True, soft_wrap=True)
    data = DataDir(settings.data)
    models, run_stages = select_stages(settings, selection)
    if not data.root.is_dir():
        raise no_data_dir_error(data)
    check_weights(data, run_stages, selection)
    stages = run_stages + predict_stages(run_stages, models, source, ocr)
    resolve = runtime_resolver(settings)
    gpus = resolve_gpus(gpus)
    resolve("extract").check_gpus(gpus)
    with DataLock(data.lock, data.root):
        hashes, planned = _plan_now(settings, data, stages)
        owned = {s.id for s in run_stages}
        stale = [p for p in planned if p.stage.id in owned and p.action == "run"]
        if stale:
            shown = "; ".join(f"{p.stage.id}: {p.reason}" for p in stale[:3])
            raise HmDataError(
                f"the run of {selection.models} ({selection.profile} profile) is not finished "
                f"here: {len(stale)} of its stages would run ({shown}"
                f"{' …' if len(stale) > 3 else ''}); train the models first with "
                f"`{run_command_line(data, selection)}`",
                data.root,
            )
        with RunProgress(len(planned), console) as progress:
            executor = Executor(
                data, resolve, hashes, progress, jobs=jobs or max(1, len(gpus)), gpus=gpus
            )
            outcome = executor.execute(planned)
    return PredictResult(outcome, data.root / stages[-1].output)


def status(settings: Settings, selection: Selection) -> list[StageStatus]:
    """Each stage's state; a done stage whose output no longer matches its record is
    "changed" (the next run rebuilds it)."""
    data = DataDir(settings.data)
    _, stages = select_stages(settings, selection)
    records = {s.id: read_record(data, s.slug) for s in stages}
    problems = cache.output_problems(data.root, stages, records)
    states = {"done": "done", "failed": "failed", "running": "incomplete"}
    result = []
    for stage in stages:
        record = records[stage.id]
        state = states[record.status] if record else "missing"
        if state == "done" and stage.id in problems:
            state = "changed"
        output = data.root / stage.output
        result.append(StageStatus(stage, state, output, problems.get(stage.id), record))
    return result


def build_envs(settings: Settings, envs: tuple[str, ...], say: Say) -> None:
    """Build (or check) the local virtualenvs of `envs`, all at once; a failed build is raised
    once every build has ended, naming its environment and log."""
    unknown = [e for e in envs if e not in ENVS]
    if unknown:
        raise HmError(f"unknown environment {', '.join(unknown)}; known: {', '.join(ENVS)}")
    runtime = make_runtime("local", settings.runtime_config)

    def ensure(env: str) -> None:
        runtime.ensure(env, say)
        say(f"{env}: {settings.runtime_config.venvs / env} is up to date")

    # one pip per venv at once: a build is one pip process on one core, mostly unpacking
    with ThreadPoolExecutor(max_workers=max(1, len(envs))) as pool:
        builds = {env: pool.submit(ensure, env) for env in envs}
    failed = [(env, build.exception()) for env, build in builds.items() if build.exception()]
    if failed:  # every build has finished: its log is whole
        raise EnvBuildError("\n".join(f"{env}: {exc}" for env, exc in failed))
