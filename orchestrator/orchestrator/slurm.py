"""The SLURM executor's side of a stage: submit it as a batch job, watch it, cancel it.

Where a stage runs (the executor: this machine, or a SLURM job) is independent of how its
environment is materialised (the runtime). Under `--executor slurm` the extract, pretrain and
train stages are submitted with `sbatch`; the short host stages keep running here. A job runs
the same `python -m hm_<env> <verb> --spec …` command the local executor would, through the
chosen runtime, so the data directory, the repository and the venvs must be on a file system
that the compute nodes share (docs/architecture.md §5).

`SlurmJob` looks like the `subprocess.Popen` the executor polls (`poll`, `wait`, `terminate`,
`kill`); one `SlurmQueue` answers for all jobs with one `squeue` call at a time, backing off
while nothing changes. The job's exit code comes from a file its script writes when the stage
ends; a job killed by SLURM (time limit, out of memory, cancelled, node failure) writes none
and its final state is read with `scontrol show job`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hm_shared.errors import HmError
from hm_shared.io import atomic_write_text

SCRIPT_FILE = "slurm-job.sh"  # kept in the attempt dir; not part of the output hash
EXIT_FILE = "slurm-exit"  # written by the script when the stage ends: its exit code
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"})
# Final states that mean the stage process did not end by itself, and how the executor reports
# them (128 + signal, as a shell does, so `describe_exit` names the kill).
KILLED_EXIT = 128 + 9


class SlurmError(HmError):
    """sbatch refused a job, or the SLURM commands are missing."""

    exit_code = 5


@dataclass(frozen=True)
class Resources:
    """What one job asks SLURM for."""

    cpus: int = 2
    mem: str = "8G"
    time: str = "24:00:00"
    gpus: int = 0


# Per stage kind; `--slurm-gpus N` sets the GPUs of extract/embed/pretrain/train jobs.
DEFAULT_RESOURCES: dict[str, Resources] = {
    "extract": Resources(cpus=4, mem="16G", time="12:00:00"),
    "embed": Resources(cpus=4, mem="16G", time="4:00:00"),
    "pretrain": Resources(cpus=4, mem="32G", time="24:00:00"),
    "train": Resources(cpus=4, mem="32G", time="24:00:00"),
    "predict": Resources(cpus=4, mem="32G", time="4:00:00"),
}


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    gpus: int = 0  # per accelerated job (--gres=gpu:N)
    extra: tuple[str, ...] = ()  # further sbatch arguments, as given
    cpus: int | None = None  # these three replace every kind's default when given
    mem: str | None = None
    time: str | None = None
    resources: Mapping[str, Resources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))

    def for_stage(self, kind: str, recipe: Mapping[str, object] | None = None) -> Resources:
        """Code default of the kind < the recipe's ([slurm.<kind>], [models.X.slurm]) < flags."""
        base = self.resources.get(kind, Resources())
        given = dict(recipe or {})
        return Resources(
            cpus=self.cpus or int(given.get("cpus", base.cpus)),  # type: ignore[call-overload]
            mem=self.mem or str(given.get("mem", base.mem)),
            time=self.time or str(given.get("time", base.time)),
            gpus=self.gpus or int(given.get("gpus", base.gpus)),  # type: ignore[call-overload]
        )


def sbatch_args(
    options: SlurmOptions,
    kind: str,
    job_name: str,
    log: Path,
    workdir: Path,
    recipe: Mapping[str, object] | None = None,
) -> list[str]:
    """The sbatch arguments of one stage job (without the script)."""
    res = options.for_stage(kind, recipe)
    args = [
        "--parsable",
        f"--job-name={job_name}",
        f"--output={log}",
        "--open-mode=append",
        f"--chdir={workdir}",
        f"--cpus-per-task={res.cpus}",
        f"--mem={res.mem}",
        f"--time={res.time}",
    ]
    if res.gpus:
        args.append(f"--gres=gpu:{res.gpus}")
    if options.partition:
        args.append(f"--partition={options.partition}")
    if options.account:
        args.append(f"--account={options.account}")
    return [*args, *options.extra]


def batch_script(
    argv: Sequence[str],
    workdir: Path,
    exit_file: Path,
    header: str,
    stop: Sequence[str] | None = None,
) -> str:
    """The job script: check that the node sees the data dir and the stage's program, run the
    stage, then record its exit code atomically. With `stop` (a container's stop command) the
    stage runs in the background and a TERM/INT to the script (scancel, the time limit) runs
    `stop` before waiting for the stage to end."""
    quote = shlex.quote
    program = quote(argv[0])
    part = quote(f"{exit_file}.part")
    lines = [
        "#!/bin/bash",
        f"# {header}",
        f'cd {quote(str(workdir))} || {{ echo "error: the data directory {workdir} is not '
        'reachable on $(hostname): it must be on a file system the nodes share" >&2; exit 5; }',
        f'command -v {program} >/dev/null || {{ echo "error: {argv[0]} not found on '
        "$(hostname): the repository and the venvs (--venvs) must be on a file system the "
        'nodes share" >&2; exit 5; }',
    ]
    command = " ".join(quote(a) for a in argv)
    if stop:
        lines += [
            f"stop_stage() {{ {' '.join(quote(a) for a in stop)}; }}",
            "trap 'stop_stage >/dev/null 2>&1' TERM INT",
            f"{command} &",
            "pid=$!",
            'while true; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done',
        ]
    else:
        lines += [command, "code=$?"]
    lines += [f'echo "$code" > {part} && mv {part} {quote(str(exit_file))}', 'exit "$code"']
    return "\n".join(lines) + "\n"


def _slurm(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise SlurmError(
            f"`{args[0]}` not found: --executor slurm needs the SLURM client commands on PATH"
        ) from None


def submit(script: Path, args: Sequence[str], environ: Mapping[str, str]) -> str:
    """sbatch the script; the job id. The job gets this process's environment (--export=ALL)."""
    done = _slurm(["sbatch", *args, str(script)], env=dict(environ))
    if done.returncode != 0:
        raise SlurmError(f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def final_state(job_id: str) -> tuple[str, int | None]:
    """(state, exit code) of a job that left the queue, from `scontrol show job`; ("UNKNOWN",
    None) once SLURM has forgotten it (MinJobAge)."""
    done = _slurm(["scontrol", "show", "job", "-o", job_id])
    fields = dict(
        item.split("=", 1) for item in done.stdout.split() if "=" in item and done.returncode == 0
    )
    state = fields.get("JobState", "UNKNOWN")
    code, _, signal = fields.get("ExitCode", "").partition(":")
    if signal and signal != "0":
        return state, 128 + int(signal)
    return state, int(code) if code.isdigit() else None


def job_state(job_id: str) -> str:
    """A job's state now (queued, or final from scontrol), for `status`."""
    queued = _slurm(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if queued.returncode == 0 and queued.stdout.strip():
        return queued.stdout.strip()
    return final_state(job_id)[0]


class SlurmQueue:
    """The states of this run's jobs: one `squeue` call refreshes all of them, at most every
    `interval` seconds, which grows while nothing changes (1 s up to 15 s)."""

    def __init__(self, first: float = 1.0, longest: float = 15.0) -> None:
        self.first, self.longest = first, longest
        self.interval = first
        self.checked = 0.0
        self.states: dict[str, str] = {}

    def state(self, job_id: str) -> str | None:
        """The queue state of a job, or None when it is no longer queued."""
        if time.monotonic() - self.checked >= self.interval:
            self.refresh()
        return self.states.get(job_id)

    def expect(self, job_id: str, state: str = "PENDING") -> None:
        """Take a job as `state` until the next refresh says otherwise (a job just submitted,
        or one scontrol calls active): the executor polls every 50 ms, SLURM is asked at most
        once per interval."""
        self.states[job_id] = state

    def refresh(self) -> None:
        done = _slurm(["squeue", "-h", "--me", "-o", "%i|%T"])
        if done.returncode != 0:
            return  # slurmctld busy or restarting: keep the last answer, ask again later
        states = dict(line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
        changed = states != self.states
        self.states = states
        self.checked = time.monotonic()
        self.interval = self.first if changed else min(self.longest, self.interval * 2)


class SlurmJob:
    """A submitted stage, seen through the `subprocess.Popen` methods the executor uses."""

    def __init__(self, job_id: str, exit_file: Path, queue: SlurmQueue) -> None:
        self.job_id = job_id
        self.exit_file = exit_file
        self.queue = queue
        self.returncode: int | None = None
        self.state = "PENDING"

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        state = self.queue.state(self.job_id)
        if state is not None:
            self.state = state
            if state in ACTIVE:
                return None
        self.state, code = final_state(self.job_id)
        if self.exit_file.is_file():  # the stage ended by itself: its own exit code
            text = self.exit_file.read_text().strip()
            code = int(text) if text.lstrip("-").isdigit() else code
        elif self.state in ACTIVE:  # not listed by the last squeue, yet active (re-attached)
            self.queue.expect(self.job_id, self.state)
            return None
        self.returncode = code if code is not None else KILLED_EXIT
        if self.state not in ("COMPLETED", "UNKNOWN") and self.returncode == 0:
            self.returncode = KILLED_EXIT  # e.g. TIMEOUT after the stage's own exit 0: a failure
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"slurm job {self.job_id}", timeout or 0)
            self.queue.checked = 0.0  # someone waits: ask again now
            time.sleep(0.5)
        return code

    def terminate(self) -> None:
        _slurm(["scancel", "--signal=TERM", "--full", self.job_id])
        _slurm(["scancel", self.job_id])

    def kill(self) -> None:
        _slurm(["scancel", "--signal=KILL", "--full", self.job_id])
        _slurm(["scancel", self.job_id])


def start_job(
    argv: Sequence[str],
    environ: Mapping[str, str],
    attempt: Path,
    log: Path,
    kind: str,
    job_name: str,
    workdir: Path,
    options: SlurmOptions,
    queue: SlurmQueue,
    header: str,
    recipe: Mapping[str, object] | None = None,
    stop: Sequence[str] | None = None,
) -> SlurmJob:
    """Write the job script into the attempt dir and submit it."""
    exit_file = attempt / EXIT_FILE
    exit_file.unlink(missing_ok=True)  # from an earlier job of the same attempt
    script = attempt / SCRIPT_FILE
    atomic_write_text(script, batch_script(argv, workdir, exit_file, header, stop))
    os.chmod(script, 0o755)
    log.parent.mkdir(parents=True, exist_ok=True)
    args = sbatch_args(options, kind, job_name, log, workdir, recipe)
    job_id = submit(script, args, environ)
    queue.expect(job_id)
    return SlurmJob(job_id, exit_file, queue)


__all__ = [
    "ACTIVE",
    "DEFAULT_RESOURCES",
    "EXIT_FILE",
    "SCRIPT_FILE",
    "Resources",
    "SlurmError",
    "SlurmJob",
    "SlurmOptions",
    "SlurmQueue",
    "batch_script",
    "final_state",
    "job_state",
    "sbatch_args",
    "start_job",
    "submit",
]
