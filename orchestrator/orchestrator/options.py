"""Options shared by several commands: one decorator each, one spelling everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator.api import REPO
from orchestrator.errors import UnknownModelError
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes
from orchestrator.runtimes import RUNTIMES

F = TypeVar("F", bound=Callable[..., Any])


def data_option(fn: F) -> F:
    return click.option(
        "--data",
        type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
        default=REPO / "data",
        show_default="<repo>/data",
        envvar="HM_DATA",
        show_envvar=True,
        help="Data directory: hm/ (dataset), weights/, work/ (everything the pipeline writes).",
    )(fn)


def profile_option(fn: F) -> F:
    return click.option(
        "--profile",
        type=click.Choice(["smoke", "full"]),
        default="full",
        show_default=True,
        envvar="HM_PROFILE",
        show_envvar=True,
        help="full: upstream recipes, needs the pretrained weights; smoke: tiny random-initialised "
        "models and short schedules (CI, demo).",
    )(fn)


def venvs_option(fn: F) -> F:
    return click.option(
        "--venvs",
        # Resolved: the local runtime starts stages in their own working directory.
        type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
        default=None,
        show_default="<repo>/.venvs",
        envvar="HM_VENVS",
        show_envvar=True,
        help="Root of the local runtime's virtualenvs (one per environment).",
    )(fn)


def runtime_options(fn: F) -> F:
    fn = venvs_option(fn)
    return click.option(
        "--runtime",
        type=click.Choice(list(RUNTIMES)),
        default="local",
        show_default=True,
        envvar="HM_RUNTIME",
        show_envvar=True,
        help="local: a virtualenv per environment; docker: one Compose service per environment.",
    )(fn)


def _parse_gpus(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    gpus = tuple(g.strip() for g in value.split(","))
    if any(not g for g in gpus) or len(set(gpus)) != len(gpus):
        raise click.BadParameter(
            f"expected distinct GPU indices or UUIDs separated by commas, got {value!r}", ctx, param
        )
    return gpus


def gpus_option(fn: F) -> F:
    return click.option(
        "--gpus",
        callback=_parse_gpus,
        envvar="HM_GPUS",
        show_envvar=True,
        metavar="0,1|UUID,…",
        help="GPUs to lease, one per extract/pretrain/train stage; independent stages run in "
        "parallel. Without it every stage runs on the CPU.",
    )(fn)


def _check_models(ctx: click.Context, param: click.Parameter, value: str) -> str:
    recipes = load_recipes(ctx.params.get("recipes", DEFAULT_RECIPES))
    try:
        recipes.select(value)
    except UnknownModelError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def models_option(required: bool = True) -> Callable[[F], F]:
    """--models: letters of the recipe file (checked against it), comma-separated, or 'all'."""
    return click.option(
        "--models",
        required=required,
        default=None if required else "all",
        show_default=not required,
        callback=_check_models,
        metavar="B[,U,…]|all",
        help="Model letters from the recipe file, comma-separated, or 'all'.",
    )


def recipes_option(fn: F) -> F:
    return click.option(
        "--recipes",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=DEFAULT_RECIPES,
        show_default="orchestrator/orchestrator/recipes.toml",
        envvar="HM_RECIPES",
        show_envvar=True,
        is_eager=True,
        help="Recipe file (docs/architecture.md §7).",
    )(fn)


def selection_options(models_required: bool = True) -> Callable[[F], F]:
    """--recipes, --models, --topk, --profile: which stages a command is about."""

    def decorate(fn: F) -> F:
        fn = profile_option(fn)
        fn = click.option(
            "--topk",
            type=click.IntRange(min=1),
            default=None,
            help="Keep N memes of each split, a fixed subset chosen by a hash of the id with both "
            "labels kept (fast runs; the same N gives the same memes on every machine).",
        )(fn)
        fn = models_option(models_required)(fn)
        return recipes_option(fn)

    return decorate


def executor_options(fn: F) -> F:
    """--executor and the SLURM flags: where extract/pretrain/train stages run."""
    fn = click.option(
        "--slurm-arg",
        "slurm_args",
        multiple=True,
        metavar="ARG",
        help="A further sbatch argument for every job (repeat it), e.g. --slurm-arg=--qos=long.",
    )(fn)
    fn = click.option(
        "--slurm-gpus",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        envvar="HM_SLURM_GPUS",
        help="GPUs per extract/pretrain/train job (--gres=gpu:N); the stage then runs on cuda.",
    )(fn)
    fn = click.option(
        "--slurm-time",
        default=None,
        metavar="D-HH:MM:SS",
        help="Time limit of every job [default: extract 12 h, pretrain/train 24 h].",
    )(fn)
    fn = click.option(
        "--slurm-mem",
        default=None,
        metavar="SIZE",
        help="Memory of every job, as sbatch --mem takes it [default: extract 16G, "
        "pretrain/train 32G].",
    )(fn)
    fn = click.option(
        "--slurm-cpus",
        type=click.IntRange(min=1),
        default=None,
        help="CPUs of every job [default: 4].",
    )(fn)
    fn = click.option(
        "--slurm-account", default=None, envvar="HM_SLURM_ACCOUNT", help="sbatch --account."
    )(fn)
    fn = click.option(
        "--slurm-partition",
        default=None,
        envvar="HM_SLURM_PARTITION",
        help="sbatch --partition (default: the cluster's default partition).",
    )(fn)
    return click.option(
        "--executor",
        type=click.Choice(["local", "slurm"]),
        default="local",
        show_default=True,
        envvar="HM_EXECUTOR",
        show_envvar=True,
        help="Where extract/pretrain/train stages run: local processes, or one SLURM job each "
        "(the data dir, the repository and the venvs must be on a file system the nodes "
        "share). Host stages always run here.",
    )(fn)
