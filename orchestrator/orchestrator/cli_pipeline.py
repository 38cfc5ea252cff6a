"""`orchestrator run` and `orchestrator plan`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator import api, slurm
from orchestrator.datadir import DataDir
from orchestrator.options import (
    data_option,
    executor_options,
    gpus_option,
    runtime_options,
    selection_options,
)
from orchestrator.plan import PlannedStage
from orchestrator.records import read_record
from orchestrator.slurm import SlurmOptions
from orchestrator.stages import Profile

F = TypeVar("F", bound=Callable[..., Any])


def execution_options(fn: F) -> F:
    """How `run` executes; `plan` takes them too, so a run's command line can be planned as is."""
    fn = executor_options(fn)
    fn = click.option(
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Stages running at once. [default: the number of --gpus, or 1]",
    )(fn)
    fn = click.option(
        "--synthetic",
        is_flag=True,
        help="When DATA has no dataset, create DATA/hm with the embedded synthetic one (demo, "
        "CI). Without it a missing DATA or DATA/hm is an error; an empty DATA/hm is always "
        "filled.",
    )(fn)
    return click.option(
        "--on-error",
        type=click.Choice(["fail", "keep-going"]),
        default="fail",
        show_default=True,
        help="fail: start nothing new after a failure; keep-going: run every stage that does not "
        "depend on a failed one.",
    )(fn)


def _job(data: DataDir, planned: PlannedStage) -> str:
    """ "; SLURM job 42 RUNNING" for a stage whose last attempt is a submitted SLURM job."""
    record = read_record(data, planned.stage.slug)
    if record is None or record.status != "running" or not record.job_id:
        return ""
    try:
        return f"; SLURM job {record.job_id} {slurm.job_state(record.job_id)}"
    except slurm.SlurmError as exc:
        return f"; SLURM job {record.job_id} ({exc})"


@click.command("run")
@selection_options()
@data_option
@runtime_options
@gpus_option
@execution_options
def run_command(
    recipes: Path,
    models: str,
    topk: int | None,
    profile: Profile,
    data: Path,
    runtime: str,
    venvs: Path | None,
    gpus: tuple[str, ...],
    on_error: str,
    synthetic: bool,
    jobs: int | None,
    executor: str,
    slurm_partition: str | None,
    slurm_account: str | None,
    slurm_gpus: int,
    slurm_cpus: int | None,
    slurm_mem: str | None,
    slurm_time: str | None,
    slurm_args: tuple[str, ...],
) -> None:
    """Run every stage the selected models need that is not already done.

    A stage is skipped when its record holds the same cache key (params, input contents,
    environment lock, code) and its output still holds the files its record lists. When DATA/hm
    is an empty folder (or missing, with --synthetic) the synthetic dataset is generated there
    first. Kill it at any point and run the same command again to resume.

    Example:

    \b
        orchestrator run --models B --topk 20 --profile smoke --synthetic
        orchestrator run --models all --profile full --gpus 0,1
        orchestrator run --models all --profile full --executor slurm --slurm-gpus 1 --jobs 20
    """
    settings = api.Settings(data=data, recipes=recipes, venvs=venvs, runtime=runtime)
    selection = api.Selection(models=models, profile=profile, topk=topk)
    slurm = None
    if executor == "slurm":
        slurm = SlurmOptions(
            slurm_partition,
            slurm_account,
            slurm_gpus,
            slurm_args,
            cpus=slurm_cpus,
            mem=slurm_mem,
            time=slurm_time,
        )
    result = api.run(
        settings,
        selection,
        gpus=gpus,
        jobs=jobs,
        on_error="keep-going" if on_error == "keep-going" else "fail",
        synthetic=synthetic,
        slurm=slurm,
    )
    outcome = result.outcome
    click.echo(f"{len(outcome.executed)} stage(s) ran, {len(outcome.cached)} cached")
    if result.fin_files:
        click.echo(f"final predictions: {result.fin_files[0].parent}/")
        for path in result.fin_files:
            click.echo(f"  {path.name}")
    if result.report is not None:
        click.echo(f"report: {result.report}")


@click.command("plan")
@selection_options()
@data_option
@runtime_options
@gpus_option
@execution_options
@click.option("--show-config", is_flag=True, help="Also print each stage's merged parameters.")
def plan_command(
    recipes: Path,
    models: str,
    topk: int | None,
    profile: Profile,
    data: Path,
    runtime: str,
    venvs: Path | None,
    gpus: tuple[str, ...],
    on_error: str,
    synthetic: bool,
    jobs: int | None,
    executor: str,
    slurm_partition: str | None,
    slurm_account: str | None,
    slurm_gpus: int,
    slurm_cpus: int | None,
    slurm_mem: str | None,
    slurm_time: str | None,
    slurm_args: tuple[str, ...],
    show_config: bool,
) -> None:
    """Print the stages a run would execute, each with the reason it runs or is cached.

    Nothing is run and no lock is taken. In the full profile, missing pretrained files are
    listed with where to get them, and files that differ from what `weights fetch` recorded
    (or from a checksum the recipe pins) are named. It takes `run`'s options: --runtime and
    --gpus are checked as `run` would check them (the docker engine, its images, the GPUs), the
    others are accepted so that a run's command line can be planned as it is.

    Example:

    \b
        orchestrator plan --models B --topk 20 --profile smoke
        orchestrator plan --models U,O --profile full --show-config
    """
    settings = api.Settings(data=data, recipes=recipes, venvs=venvs, runtime=runtime)
    result = api.make_plan(settings, api.Selection(models=models, profile=profile, topk=topk))
    problems, notes = api.runtime_problems(settings, result.planned, gpus)
    if not result.dataset_present:
        hm = result.data.hm
        how = "`run`" if hm.is_dir() or synthetic else "`run --synthetic`"
        click.echo(f"note: no dataset in {hm}; {how} generates the synthetic dataset there")
    width = max(len(p.stage.id) for p in result.planned)
    for p in result.planned:
        click.echo(f"{p.stage.id:<{width}}  {p.action:<6}  {p.reason}{_job(result.data, p)}")
        if show_config:
            params = json.dumps(p.stage.params, sort_keys=True)
            engine = json.dumps(p.stage.engine, sort_keys=True)
            inputs = json.dumps({k: v.path for k, v in p.stage.inputs.items()}, sort_keys=True)
            click.echo(
                f"{'':<{width}}  env={p.stage.env} profile={p.stage.profile} "
                f"output={p.stage.output}"
            )
            click.echo(f"{'':<{width}}  inputs={inputs}")
            click.echo(f"{'':<{width}}  params={params}")
            if p.stage.engine:
                click.echo(f"{'':<{width}}  engine={engine}")
            if p.stage.run:
                click.echo(f"{'':<{width}}  run={p.stage.run.model_dump_json()}")
    runs = sum(p.action == "run" for p in result.planned)
    click.echo(f"{runs} to run, {len(result.planned) - runs} cached")
    if result.missing_weights:
        click.echo("missing pretrained files (the full profile needs them):")
        for weight in result.missing_weights:
            click.echo(f"  {result.data.weights / weight.file}  (get it from {weight.where()})")
    for line in notes:
        click.echo(f"note: {line}")
    if problems:
        click.echo(f"runtime {runtime} (`run` stops on these before any stage):")
        for line in problems:
            click.echo(f"  {line}")
    if result.changed_weights:
        click.echo("pretrained files that differ from what was fetched (`run` refuses them):")
        for line in result.changed_weights:
            click.echo(f"  {line}")
