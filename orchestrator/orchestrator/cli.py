"""`orchestrator`: the Click entry point; one top-level handler maps errors to exit codes."""

from __future__ import annotations

from typing import Any

import click

from hm_shared.errors import HmError
from orchestrator.cli_envs import envs, images
from orchestrator.cli_pipeline import plan_command, run_command
from orchestrator.cli_predict import predict_command
from orchestrator.cli_status import status_command
from orchestrator.cli_weights import weights
from orchestrator.errors import UnknownModelError, file_system_fault

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class HmClickError(click.ClickException):
    """A domain error shown as `Error: …` with its documented exit code (architecture.md §6)."""

    def __init__(self, error: HmError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


class HmGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UnknownModelError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except HmError as exc:
            raise HmClickError(exc) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            raise HmClickError(file_system_fault(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(130) from None


@click.group(cls=HmGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="hm-orchestrator")
def cli() -> None:
    """Plan, run and resume the hateful-memes pipeline over one data directory."""


cli.add_command(run_command)
cli.add_command(plan_command)
cli.add_command(predict_command)
cli.add_command(status_command)
cli.add_command(envs)
cli.add_command(images)
cli.add_command(weights)


def main() -> None:
    cli(prog_name="orchestrator")
