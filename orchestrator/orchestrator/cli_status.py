"""`orchestrator status`: what exists in a data directory."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator import api, slurm
from orchestrator.options import data_option, selection_options
from orchestrator.stages import Profile


@click.command("status")
@selection_options(models_required=False)
@data_option
def status_command(
    recipes: Path, models: str, topk: int | None, profile: Profile, data: Path
) -> None:
    """Show each stage's state (done, changed, failed, incomplete, missing), its output and the
    final files. "changed": done, but its output was deleted or altered since (the next run
    rebuilds it).

    Example:

    \b
        orchestrator status
        orchestrator status --models B --data /mnt/hm-data
    """
    settings = api.Settings(data=data, recipes=recipes)
    rows = api.status(settings, api.Selection(models=models, profile=profile, topk=topk))
    width = max(len(r.stage.id) for r in rows)
    for row in rows:
        detail = ""
        if row.record is not None and row.state == "done" and row.record.seconds is not None:
            detail = f"{row.record.seconds:.1f} s, ended {row.record.ended}"
        elif row.record is not None and row.state in ("failed", "incomplete"):
            detail = f"log {data / row.record.log}"
        elif row.state == "changed":
            detail = f"{row.problem}; `orchestrator run` rebuilds it"
        if row.record is not None and row.record.job_id and row.state == "incomplete":
            try:
                detail += f"; SLURM job {row.record.job_id} {slurm.job_state(row.record.job_id)}"
            except slurm.SlurmError as exc:
                detail += f"; SLURM job {row.record.job_id} ({exc})"
        line = f"{row.stage.id:<{width}}  {row.state:<10}  {row.stage.output}  {detail}"
        click.echo(line.rstrip())
    root = Path(data)
    fin = sorted((root / "work" / "ensemble").glob("FIN_*.csv"))
    report = root / "work" / "report" / "index.html"
    click.echo("final predictions: " + (", ".join(str(p) for p in fin) if fin else "none yet"))
    click.echo(f"report: {report if report.is_file() else 'none yet'}")
