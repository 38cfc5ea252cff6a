"""Rich progress for `run`: one row per running stage, one overall row with cached stages counted,
and a line above the rows for each finished stage."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from orchestrator.stages import StageDef

SYMBOLS = {"done": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]–[/]"}


class RunProgress:
    def __init__(self, total: int, console: Console | None = None):
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.total = total
        self.counts = {"done": 0, "cached": 0, "failed": 0, "skipped": 0}
        self.overall = self.progress.add_task("stages", total=total, note=self._note())
        self.rows: dict[str, TaskID] = {}

    def _note(self) -> str:
        c = self.counts
        return (
            f"{sum(c.values())}/{self.total}  ran {c['done']}, cached {c['cached']}"
            + (f", failed {c['failed']}" if c["failed"] else "")
            + (f", skipped {c['skipped']}" if c["skipped"] else "")
        )

    def started(self, stage: StageDef, gpu: str | None) -> None:
        where = f"gpu {gpu}" if gpu else "cpu"
        self.rows[stage.id] = self.progress.add_task(f"  {stage.id}", total=None, note=where)

    def finished(self, stage: StageDef, status: str, detail: str) -> None:
        self.counts[status] += 1
        row = self.rows.pop(stage.id, None)
        if row is not None:
            self.progress.remove_task(row)
        if status != "cached":
            first = detail.splitlines()[0] if detail else ""
            self.console.print(
                f"{SYMBOLS[status]} {stage.id}  {first}", highlight=False, soft_wrap=True
            )
        self.progress.update(self.overall, completed=sum(self.counts.values()), note=self._note())

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()
