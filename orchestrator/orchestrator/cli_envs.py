"""`orchestrator envs build` (local virtualenvs) and `orchestrator images build` (Docker)."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator import api
from orchestrator import images as image_builds
from orchestrator.options import venvs_option


@click.group()
def envs() -> None:
    """Local virtualenvs, one per environment, built from the lock files."""


@envs.command("build")
@click.argument("names", nargs=-1, type=click.Choice(api.ENVS))
@venvs_option
def envs_build(names: tuple[str, ...], venvs: Path | None) -> None:
    """Build (or check) the virtualenvs of the named environments (all when none is named).

    A venv is rebuilt when its marker hm-env.json is missing or names another lock hash.

    Example:

    \b
        orchestrator envs build torch
        orchestrator envs build extract torch paddle --venvs /opt/hm-venvs
    """
    settings = api.Settings(data=Path("."), venvs=venvs)
    api.build_envs(settings, names or api.ENVS, click.echo)


@click.group()
def images() -> None:
    """Docker images, one per environment, built without network inside the build."""


@images.command("build")
@click.argument("names", nargs=-1, type=click.Choice(image_builds.IMAGES))
@click.option(
    "--base-image",
    default=None,
    help="Base image to build on instead of the local debootstrap image.",
)
def images_build(names: tuple[str, ...], base_image: str | None) -> None:
    """Build the wheelhouse, the base image and the images of the named environments.

    With no name: extract, torch and paddle. `paddle-gpu` is paddle's GPU build (paddlepaddle-gpu,
    CUDA 11.8 + cuDNN 8.6 from NVIDIA's wheels), which `--runtime docker --gpus …` runs ES/EL in.

    Example:

    \b
        orchestrator images build
        orchestrator images build paddle-gpu
        orchestrator images build torch --base-image python:3.11-slim-bookworm
    """
    times = image_builds.build_all(api.REPO, names or image_builds.ENVS, base_image)
    click.echo(
        f"wheelhouse {times.wheelhouse_s:.0f} s, base image {times.base_s:.0f} s, "
        f"images {times.images_s:.0f} s"
    )
