"""Run a plan: a graphlib ready-set loop with GPU leases, records, promotion and the trace.

Each ready stage is decided again with the real output hashes of its producers (early cut-off:
a producer that reran to an identical output leaves its consumers cached). Stage processes run
in parallel up to `jobs`; a stage that needs an accelerator also needs a free GPU when GPUs
were given. Dependents of a failed stage are skipped and named; with `on_error="fail"` nothing
new starts after the first failure (running stages finish and are promoted).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any, Literal, Protocol

from hm_shared.io import atomic_write_text
from hm_shared.spec import StageSpec
from orchestrator.cache import key_parts, output_problems, stage_key
from orchestrator.datadir import DataDir
from orchestrator.errors import Interrupted, StageFailed
from orchestrator.plan import Fingerprints, PlannedStage, decide
from orchestrator.promote import drop_stale_attempts, promote
from orchestrator.records import (
    Record,
    append_trace,
    now,
    read_record,
    seconds_between,
    write_record,
)
from orchestrator.runtimes import EnvInfo, Runtime
from orchestrator.slurm import EXIT_FILE, SlurmJob, SlurmOptions, SlurmQueue, start_job
from orchestrator.stages import StageDef

OnError = Literal["fail", "keep-going"]


class StageProcess(Protocol):
    """A running stage: a local process (`subprocess.Popen`) or a SLURM job (`SlurmJob`)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


TERMINATE_GRACE_S = 10.0
LOG_TAIL_LINES = 12
# Faults of the machine that a stage's own traceback may bury under later errors.
_OS_FAULTS = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system|Permission denied"
)
# Exit codes shells and container engines give a process killed by a signal (128 + n).
_KILLERS = (signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)
_SIGNAL_EXITS = {128 + s.value: s for s in (*_KILLERS, signal.SIGINT)}


def describe_exit(code: int | None) -> str:
    """`exit 3`, or `killed by SIGKILL` for a signal death (a negative subprocess code, or 128 + n
    from a shell or container engine)."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code in _SIGNAL_EXITS:
        return f"killed by {_SIGNAL_EXITS[code].name} (exit {code})"
    return f"exit {code}"


def failure_summary(stage_id: str, how: str, log: Path, lines: list[str]) -> str:
    """The failure a user reads: how it ended (`describe_exit`, plus the SLURM state of a
    job), the log, the last machine fault (no space, read-only, no permission) wherever it is
    in the log, then the log's last lines."""
    head = f"stage {stage_id} failed ({how}); log: {log}"
    faults = [line.strip() for line in lines if _OS_FAULTS.search(line)]
    cause = [f"  cause: {faults[-1]}"] if faults else []
    tail = [f"    {line}" for line in lines[-LOG_TAIL_LINES:]]
    return "\n".join([head, *cause, *tail])


class Events(Protocol):
    """What the progress display hears about."""

    def started(self, stage: StageDef, gpu: str | None) -> None: ...

    def finished(self, stage: StageDef, status: str, detail: str) -> None: ...

    def say(self, message: str) -> None: ...


@dataclass
class Outcome:
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # stage → message
    skipped: dict[str, str] = field(default_factory=dict)  # stage → why


@dataclass
class _Loop:
    """The state of one `execute` loop."""

    ready: list[str] = field(default_factory=list)  # ready stages not yet settled
    bad: set[str] = field(default_factory=set)  # failed or skipped: their dependents skip
    stopping: bool = False  # a stage failed under --on-error fail: start nothing new
    # stage → (action, key parts, record), decided once when it is first ready
    decided: dict[str, tuple[str, dict[str, Any], Record | None]] = field(default_factory=dict)


@dataclass
class _Running:
    stage: StageDef
    proc: StageProcess
    record: Record
    gpu: str | None
    foreign_output: bool = False  # something sat at the output path with no record of ours


class Executor:
    def __init__(
        self,
        data: DataDir,
        runtime_for: Callable[[str], Runtime],
        hashes: Fingerprints,
        events: Events,
        jobs: int = 1,
        gpus: tuple[str, ...] = (),
        on_error: OnError = "fail",
        slurm: SlurmOptions | None = None,
    ):
        self.data = data
        # --executor slurm: extract/pretrain/train stages become SLURM jobs (docs §5)
        self.slurm = slurm
        self.queue = SlurmQueue()
        self.runtime_for = runtime_for
        self.hashes = hashes
        self.events = events
        self.jobs = max(1, jobs)
        self.free_gpus = list(gpus)
        self.use_gpus = bool(gpus)
        self.on_error = on_error
        self.envs: dict[str, EnvInfo] = {}
        self.output_hashes: dict[str, str] = {}
        self.failed_codes: dict[str, int] = {}  # stage id → its exit code (StageFailed's class)
        self.outcome = Outcome()
        self.running: dict[str, _Running] = {}

    # -- decisions ---------------------------------------------------------------------------

    def _parts(self, stage: StageDef) -> dict[str, Any]:
        hashes = {
            name: (
                self.output_hashes[ref.producer] if ref.producer else self.hashes.inputs[ref.ident]
            )
            for name, ref in stage.keyed_inputs.items()
        }
        return key_parts(stage, hashes, self.hashes.env_locks, self.hashes.code)

    def ensure_env(self, stage: StageDef) -> EnvInfo:
        if stage.env not in self.envs:
            self.envs[stage.env] = self.runtime_for(stage.env).ensure(stage.env, self.events.say)
        return self.envs[stage.env]

    # -- one stage -----------------------------------------------------------------------------

    def _write_run_facts(self, stage: StageDef, stages: Mapping[str, StageDef]) -> None:
        """The timings file of a stage that reads it (`InputRef.run_facts`): one row per stage
        done so far, from its record, and whether this run took it from the cache."""
        if not any(ref.run_facts for ref in stage.inputs.values()):
            return
        timings = []
        for sid, other in stages.items():
            record = read_record(self.data, other.slug)
            if sid == stage.id or record is None or record.status != "done":
                continue
            timings.append(
                {
                    "stage": sid,
                    "kind": other.kind,
                    "runtime": record.runtime,
                    "start": record.started,
                    "end": record.ended,
                    "seconds": record.seconds,
                    "cached": sid in self.outcome.cached,
                }
            )
        atomic_write_text(self.data.timings, json.dumps(timings, indent=1) + "\n")

    def _start(
        self,
        stage: StageDef,
        parts: dict[str, Any],
        gpu: str | None,
        stages: Mapping[str, StageDef],
    ) -> None:
        info = self.ensure_env(stage)
        runtime = self.runtime_for(stage.env)
        key = stage_key(parts)
        previous = read_record(self.data, stage.slug)
        # no record ⇒ this orchestrator never wrote the output path: whatever is there is a
        # user's (a store of the direct extract command, a copy), kept aside at promotion
        foreign = previous is None and (self.data.root / stage.output).exists()
        attempt = self.data.attempt(stage.slug, key)
        log = self.data.log(stage.slug)
        slurm = self.slurm if stage.needs_accelerator else None  # host stages run here
        job = self._reattach(previous, key, attempt) if slurm is not None else None
        if job is not None and previous is not None:
            self.running[stage.id] = _Running(stage, job, previous, gpu, foreign)
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"=== {now()} {stage.id}: re-attached to SLURM job {job.job_id}\n")
            self.events.started(stage, gpu)
            return
        record = Record(
            stage=stage.id,
            kind=stage.kind,
            status="running",
            key=key,
            key_parts=parts,
            output=stage.output,
            attempt=self.data.rel(attempt),
            log=self.data.rel(log),
            runtime=runtime.name,
            image=info.image,
            gpu=gpu,
            started=now(),
        )
        write_record(self.data, stage.slug, record)  # 1. marked incomplete before anything else
        attempt.mkdir(parents=True, exist_ok=True)  # 2. same key ⇒ same dir ⇒ the stage resumes
        slurm_gpus = slurm.for_stage(stage.kind, stage.resources).gpus if slurm else 0
        spec = StageSpec(
            stage=stage.id,
            kind=stage.kind,
            env=stage.env,
            data_root=runtime.data_root(self.data, stage.env),
            output=record.attempt,
            inputs={name: ref.path for name, ref in stage.inputs.items()},
            params=stage.params,
            engine=stage.engine,
            run=stage.run,
            profile=stage.profile,
            device="cuda" if gpu or slurm_gpus else "cpu",
        )
        self._write_run_facts(stage, stages)
        spec_path = attempt / "spec.json"
        spec.write(spec_path)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(
                f"=== {record.started} {stage.id} key {key[:12]} runtime {runtime.name} "
                f"gpu {gpu or '-'} attempt {record.attempt}\n"
            )
        proc: StageProcess
        if slurm is not None:  # 3. a SLURM job …
            argv, environ, stop = runtime.job(stage.env, stage.verb, spec_path, self.data)
            proc = start_job(
                argv,
                environ,
                attempt,
                log,
                stage.kind,
                stage.slug,
                self.data.root,
                slurm,
                self.queue,
                header=f"stage {stage.id}, key {key[:12]}",
                recipe=stage.resources,
                stop=stop,
            )
            record.job_id = proc.job_id
            write_record(self.data, stage.slug, record)  # a restarted run re-attaches to it
        else:  # … or a process here
            proc = runtime.start(stage.env, stage.verb, spec_path, log, gpu, self.data)
        self.running[stage.id] = _Running(stage, proc, record, gpu, foreign)
        self.events.started(stage, gpu)

    def _reattach(self, previous: Record | None, key: str, attempt: Path) -> SlurmJob | None:
        """The job a killed orchestrator left for this stage, if it still runs or succeeded."""
        if previous is None or previous.status != "running" or previous.key != key:
            return None
        if previous.job_id is None:
            return None
        job = SlurmJob(previous.job_id, attempt / EXIT_FILE, self.queue)
        code = job.poll()
        return job if code is None or code == 0 else None

    def _finish(self, run: _Running, code: int) -> bool:
        stage, record = run.stage, run.record
        ended = now()
        attempt = self.data.root / record.attempt
        status = "failed"
        if code == 0:
            try:
                if run.foreign_output:
                    self._keep_aside(stage, self.data.root / record.log)
                promoted = promote(attempt, self.data.root / stage.output)  # 4.
                record.output_hash, record.output_files = promoted
                record.device = reported_device(self.data.root / stage.output)
                status = "done"
            except OSError as exc:
                with open(self.data.root / record.log, "a", encoding="utf-8") as handle:
                    handle.write(f"promotion of {record.attempt} failed: {exc}\n")
                code = 1
        record.status, record.ended, record.exit_code = status, ended, code
        record.seconds = round(seconds_between(record.started, ended), 3)
        write_record(self.data, stage.slug, record)  # 5. written last
        append_trace(
            self.data,
            {
                "stage": stage.id,
                "key": record.key,
                "runtime": record.runtime,
                "gpu": run.gpu,
                "start": record.started,
                "end": ended,
                "exit": code,
                "cached": 0,
            },
        )
        if status == "done":
            drop_stale_attempts(self.data.attempts(stage.slug))
            self.output_hashes[stage.id] = record.output_hash or ""
            self.outcome.executed.append(stage.id)
            self.events.finished(stage, "done", f"{record.seconds:.1f} s")
            return True
        how = describe_exit(code)
        if isinstance(run.proc, SlurmJob):  # TIMEOUT, OUT_OF_MEMORY, CANCELLED … say which
            how = f"{how}; SLURM job {run.proc.job_id} {run.proc.state}"
            with open(self.data.root / record.log, "a", encoding="utf-8") as handle:
                handle.write(f"SLURM job {run.proc.job_id} ended {run.proc.state} ({how})\n")
        self.outcome.failed[stage.id] = self._failure_message(stage, record, how)
        self.failed_codes[stage.id] = code
        self.events.finished(stage, "failed", f"{how}, log {self.data.root / record.log}")
        return False

    def _keep_aside(self, stage: StageDef, log: Path) -> None:
        """Move an output path this orchestrator did not write out of the way, never delete it."""
        output = self.data.root / stage.output
        if not output.exists():
            return
        kept = output.with_name(f"{output.name}.kept-{now().replace(':', '')}")
        os.replace(output, kept)
        message = f"{stage.id}: {output} held files this orchestrator did not write: kept as {kept}"
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(message + "\n")
        self.events.say(message)

    def _failure_message(self, stage: StageDef, record: Record, how: str) -> str:
        log = self.data.root / record.log
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        return failure_summary(stage.id, how, log, lines)

    def _cached(self, stage: StageDef, record: Record) -> None:
        self.output_hashes[stage.id] = record.output_hash or ""
        self.outcome.cached.append(stage.id)
        stamp = now()
        append_trace(
            self.data,
            {
                "stage": stage.id,
                "key": record.key,
                "runtime": record.runtime,
                "gpu": None,
                "start": stamp,
                "end": stamp,
                "exit": 0,
                "cached": 1,
            },
        )
        self.events.finished(stage, "cached", "")

    # -- the loop ------------------------------------------------------------------------------

    def execute(self, planned: list[PlannedStage]) -> Outcome:
        """Run every stage of `planned` that is not cached; raise StageFailed / Interrupted."""
        stages = {p.stage.id: p.stage for p in planned}
        for p in planned:  # build the environments up front, not while a progress row is live
            if p.action == "run":
                self.ensure_env(p.stage)
        sorter = TopologicalSorter({sid: s.deps for sid, s in stages.items()})
        sorter.prepare()
        loop = _Loop()
        try:
            with _sigterm_interrupts():
                while sorter.is_active():
                    loop.ready.extend(sorter.get_ready())
                    progressed = self._dispatch(loop, stages, sorter)
                    if not self._reap(loop, sorter) and not progressed:
                        time.sleep(0.05)
        except KeyboardInterrupt:
            self._terminate_all()
            raise Interrupted(self._interrupted_message()) from None
        except OSError:  # the data dir refused a write (read-only, full): stop what runs
            self._terminate_all()
            raise
        if self.outcome.failed:
            raise StageFailed(self._failed_summary(), list(self.failed_codes.values()))
        return self.outcome

    def _dispatch(
        self, loop: _Loop, stages: Mapping[str, StageDef], sorter: TopologicalSorter[str]
    ) -> bool:
        """Skip, take from the cache or start each ready stage that can go; True if any did."""
        progressed = False
        for sid in list(loop.ready):
            settled = self._settle(stages[sid], loop, stages)
            if settled == "waiting":
                continue
            loop.ready.remove(sid)
            progressed = True
            if settled == "started":
                continue
            if sid in self.outcome.skipped:
                loop.bad.add(sid)
            sorter.done(sid)
        return progressed

    def _settle(
        self, stage: StageDef, loop: _Loop, stages: Mapping[str, StageDef]
    ) -> Literal["skipped", "cached", "started", "waiting"]:
        blocked = [d for d in stage.deps if d in loop.bad]
        if blocked or loop.stopping:
            why = (
                f"{', '.join(blocked)} did not complete"
                if blocked
                else "not started: a stage failed and --on-error is fail"
            )
            self.outcome.skipped[stage.id] = why
            self.events.finished(stage, "skipped", why)
            return "skipped"
        if stage.id not in loop.decided:
            # Once per stage: its producers are done, so its key and record stay as they are
            # while it waits for a job slot or a GPU (no re-hashing on every poll).
            parts = self._parts(stage)
            record = read_record(self.data, stage.slug)
            problems = output_problems(self.data.root, [stage], {stage.id: record})
            action, _ = decide(record, parts, problems.get(stage.id))
            loop.decided[stage.id] = (action, parts, record)
        action, parts, record = loop.decided[stage.id]
        if action == "cached" and record is not None:
            self._cached(stage, record)
            return "cached"
        if len(self.running) >= self.jobs or self._waits_for_gpu(stage):
            return "waiting"
        gpu = self.free_gpus.pop(0) if stage.needs_accelerator and self.use_gpus else None
        self._start(stage, parts, gpu, stages)
        return "started"

    def _reap(self, loop: _Loop, sorter: TopologicalSorter[str]) -> bool:
        """Finish every stage whose process has ended; True if any had."""
        reaped = False
        for sid, run in list(self.running.items()):
            code = run.proc.poll()
            if code is None:
                continue
            del self.running[sid]
            if run.gpu is not None:
                self.free_gpus.append(run.gpu)
            if not self._finish(run, code):
                loop.bad.add(sid)
                loop.stopping = loop.stopping or self.on_error == "fail"
            sorter.done(sid)
            reaped = True
        return reaped

    def _waits_for_gpu(self, stage: StageDef) -> bool:
        return stage.needs_accelerator and self.use_gpus and not self.free_gpus

    def _terminate_all(self) -> None:
        """Stop running stages; their records stay 'running' and their attempt dirs stay."""
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for run in self.running.values():
            try:
                run.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
            append_trace(
                self.data,
                {
                    "stage": run.stage.id,
                    "key": run.record.key,
                    "runtime": run.record.runtime,
                    "gpu": run.gpu,
                    "start": run.record.started,
                    "end": now(),
                    "exit": 130,
                    "cached": 0,
                },
            )

    def _interrupted_message(self) -> str:
        names = ", ".join(self.running) or "none"
        return (
            f"interrupted; stopped stages: {names}. Their attempt directories are kept: "
            "run the same command again to resume"
        )

    def _failed_summary(self) -> str:
        lines = list(self.outcome.failed.values())
        if self.outcome.skipped:
            lines.append("skipped:")
            lines += [f"  {sid} ({why})" for sid, why in self.outcome.skipped.items()]
        return "\n".join(lines)


def reported_device(output: Path) -> str | None:
    """The device a train stage wrote into its metrics.json ("cpu", "cuda:0 (NVIDIA H200)"):
    a GPU lease says what was reserved, this what was used."""
    try:
        device = json.loads((output / "metrics.json").read_text(encoding="utf-8")).get("device")
    except (OSError, ValueError, AttributeError):
        return None
    return device if isinstance(device, str) else None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops stages like Ctrl-C does (where signals can be set: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
