"""`orchestrator weights fetch`: the pretrained files of the full profile, from the recipes."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator import api
from orchestrator.options import data_option, models_option, recipes_option


@click.group()
def weights() -> None:
    """Pretrained files under <data>/weights, as the full profile needs them."""


@weights.command("fetch")
@recipes_option
@models_option(required=False)
@data_option
def weights_fetch(recipes: Path, models: str, data: Path) -> None:
    """Download the pretrained files the selected models need and do not have yet.

    Each file comes from its recipe `source` URL, or is unpacked from the archive there (an
    archive shared by several files is downloaded once). Files already present are kept; a
    download goes to a .part file first, so an interrupted fetch leaves nothing half-written where
    a stage would read it: run the same command again to finish. `orchestrator plan --profile
    full` lists what is missing.

    Example:

    \b
        orchestrator weights fetch --models EL,ES,U
        orchestrator weights fetch --data /mnt/hm-data
    """
    settings = api.Settings(data=data, recipes=recipes)
    result = api.fetch_weights(settings, models, click.echo)
    click.echo(
        f"{len(result.fetched)} fetched, {len(result.already_present)} already present "
        f"under {data / 'weights'}"
    )
