"""The executor on real stage processes (script_stage.py): promotion, records, trace, GPU
leases, failure policy, interruption and resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from orch_helpers import HASHES, ScriptRuntime, diamond

from orchestrator.cache import output_problems
from orchestrator.datadir import DataDir
from orchestrator.errors import Interrupted, StageFailed
from orchestrator.executor import Executor
from orchestrator.plan import plan
from orchestrator.records import read_record, read_trace
from orchestrator.stages import StageDef


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, stage: StageDef, gpu: str | None) -> None:
        self.events.append(("started", stage.id))

    def finished(self, stage: StageDef, status: str, detail: str) -> None:
        self.events.append((status, stage.id))

    def say(self, message: str) -> None:
        self.events.append(("say", message))


def _execute(data: DataDir, runtime: ScriptRuntime, stages: list[StageDef], **kw):
    records = {s.id: read_record(data, s.slug) for s in stages}
    planned = plan(stages, records, HASHES, output_problems(data.root, stages, records))
    executor = Executor(data, lambda env: runtime, HASHES, Sink(), **kw)
    return executor, executor.execute(planned)


def test_runs_promotes_records_and_then_caches(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond()
    _, outcome = _execute(data, runtime, stages)
    assert outcome.executed[0] == "a" and outcome.executed[-1] == "d"
    assert sorted(outcome.executed) == ["a", "b", "c", "d"]
    assert (data.root / "work/d/value.txt").read_text() == "d<b<a<>>,c<a<>>>"
    record = read_record(data, "d")
    assert record.status == "done" and record.exit_code == 0 and record.output_hash
    assert not (data.attempts("d")).exists() or not any(data.attempts("d").iterdir())
    assert (data.root / "work/b/spec.json").is_file()
    assert "=== " in data.log("b").read_text()
    rows = read_trace(data.trace)
    assert [r["cached"] for r in rows] == ["0"] * 4
    _, again = _execute(data, runtime, stages)
    assert again.executed == [] and sorted(again.cached) == ["a", "b", "c", "d"]
    assert [r["cached"] for r in read_trace(data.trace)][4:] == ["1"] * 4


def test_an_output_path_it_never_wrote_is_kept_aside_not_deleted(
    data: DataDir, runtime: ScriptRuntime
) -> None:
    # a store made by hand (the direct extract command, a copy) where stage b will promote
    theirs = data.root / "work/b"
    theirs.mkdir(parents=True)
    (theirs / "store.lmdb").write_text("hours of work")
    executor, _ = _execute(data, runtime, diamond())
    (kept,) = data.root.glob("work/b.kept-*")
    assert (kept / "store.lmdb").read_text() == "hours of work"
    assert (data.root / "work/b/value.txt").is_file()
    said = [m for kind, m in executor.events.events if kind == "say"]
    assert said == [f"b: {theirs} held files this orchestrator did not write: kept as {kept}"]
    assert said[0] in data.log("b").read_text()
    # its own outputs it replaces as before: a rerun of b (params changed) keeps nothing aside
    _execute(data, runtime, diamond({"b": {"sleep": 0}}))
    assert len(list(data.root.glob("work/b.kept-*"))) == 1


def test_early_cutoff_keeps_consumers_cached(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond()
    _execute(data, runtime, stages)
    # b reruns (its params changed) but its output depends only on its id and inputs: the
    # output hash is unchanged, so d stays cached.
    changed = diamond({"b": {"sleep": 0}})
    _, outcome = _execute(data, runtime, changed)
    assert outcome.executed == ["b"]
    assert "d" in outcome.cached


def test_one_gpu_per_accelerated_stage_in_parallel(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond({"b": {"sleep": 1.5}, "c": {"sleep": 1.5}})
    _execute(data, runtime, stages, gpus=("0", "1"), jobs=2)
    gpus = {(data.root / f"work/{s}/gpu.txt").read_text() for s in "bc"}
    assert gpus == {"0|cuda", "1|cuda"}
    assert (data.root / "work/a/gpu.txt").read_text() == "|cpu"  # host stages lease no GPU
    b, c = read_record(data, "b"), read_record(data, "c")
    assert b.started < c.ended and c.started < b.ended, "b and c should overlap"
    assert {read_record(data, s).gpu for s in "bc"} == {"0", "1"}


def test_one_gpu_serialises_accelerated_stages(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond({"b": {"sleep": 0.5}, "c": {"sleep": 0.5}})
    _execute(data, runtime, stages, gpus=("7",), jobs=4)
    b, c = read_record(data, "b"), read_record(data, "c")
    assert b.gpu == c.gpu == "7"
    assert b.ended <= c.started or c.ended <= b.started


def test_failure_skips_dependents_and_names_the_log(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond({"b": {"fail": True}})
    with pytest.raises(StageFailed) as info:
        _execute(data, runtime, stages, on_error="keep-going")
    message = str(info.value)
    assert "stage b failed (exit 1); log: " + str(data.log("b")) in message
    assert "asked to fail" in message
    assert "skipped:\n  d (b did not complete)" in message
    assert (data.root / "work/c/value.txt").is_file()  # independent work went on
    assert read_record(data, "b").status == "failed"
    assert not (data.root / "work/b").exists()
    assert read_record(data, "d") is None


@pytest.mark.parametrize(
    ("codes", "expected"),
    [((3, 3), 3), ((2, None), 2), ((3, 2), 1), ((3, 1), 1), ((4, None), 1), ((1, None), 1)],
)
def test_exit_code_carries_the_stages_class(
    data: DataDir, runtime: ScriptRuntime, codes: tuple[int, int | None], expected: int
) -> None:
    # bad data in every failed stage → 3, a bad spec → 2 (architecture §6); otherwise 1
    b, c = codes
    stages = diamond({"b": {"fail": b}, **({"c": {"fail": c}} if c else {})})
    with pytest.raises(StageFailed) as info:
        _execute(data, runtime, stages, on_error="keep-going")
    assert info.value.exit_code == expected


def test_a_machine_fault_is_shown_as_the_cause(data: DataDir, runtime: ScriptRuntime) -> None:
    with pytest.raises(StageFailed) as info:
        _execute(data, runtime, diamond({"b": {"disk_full": True}}), on_error="keep-going")
    message = str(info.value)
    # the ENOSPC line is 20 lines above the end of the log, out of the shown tail
    assert "stage b failed (exit 1); log: " in message
    assert "  cause: OSError: [Errno 28] No space left on device: '/data/work/x'" in message


def test_a_signal_death_is_named(data: DataDir, runtime: ScriptRuntime) -> None:
    with pytest.raises(StageFailed) as info:
        _execute(data, runtime, diamond({"b": {"kill_self": True}}), on_error="keep-going")
    assert "stage b failed (killed by SIGKILL); log: " in str(info.value)


def test_exit_descriptions() -> None:
    from orchestrator.executor import describe_exit

    assert describe_exit(3) == "exit 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(137) == "killed by SIGKILL (exit 137)"  # docker / a shell
    assert describe_exit(None) == "no exit code"


def test_fail_policy_starts_nothing_new(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond({"b": {"fail": True}})
    with pytest.raises(StageFailed, match="not started: a stage failed"):
        _execute(data, runtime, stages, on_error="fail", jobs=1)
    assert read_record(data, "c") is None


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt even where this process inherited SIGINT as ignored (a
    background job of a non-interactive shell, e.g. `.ci/run &`): Python then installs no
    handler of its own, and the interrupt tests would wait for nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_when_started(data: DataDir, stage: str) -> threading.Thread:
    def watch() -> None:
        flag = data.root / "work/.attempts" / stage
        deadline = time.monotonic() + 300  # generous: a loaded CI machine starts stages slowly
        while time.monotonic() < deadline:
            if any(flag.glob("*/started.flag")):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.025)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.usefixtures("ctrl_c")
def test_interrupt_keeps_attempt_and_resume_finishes(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond({"b": {"sleep": 30}})
    _interrupt_when_started(data, "b")
    with pytest.raises(Interrupted, match="stopped stages: b"):
        _execute(data, runtime, stages, jobs=1)  # b sleeps 30 s: the timeout guards the test
    record = read_record(data, "b")
    assert record.status == "running"
    attempt = data.root / record.attempt
    assert (attempt / "starts.txt").read_text().count("\n") == 1
    assert not (data.root / "work/b").exists()
    records = {s.id: read_record(data, s.slug) for s in stages}
    reasons = {p.stage.id: p.reason for p in plan(stages, records, HASHES, {})}
    assert reasons["b"] == "incomplete attempt"


@pytest.mark.usefixtures("ctrl_c")
def test_resume_reuses_the_attempt_dir(data: DataDir, runtime: ScriptRuntime) -> None:
    stages = diamond({"b": {"sleep": 2}})
    _interrupt_when_started(data, "b")
    with pytest.raises(Interrupted):
        _execute(data, runtime, stages, jobs=1)
    attempt = data.root / read_record(data, "b").attempt
    _, outcome = _execute(data, runtime, stages, jobs=1)
    assert "b" in outcome.executed
    starts = (data.root / "work/b/starts.txt").read_text().splitlines()
    assert len(starts) == 2  # the second attempt ran in the first one's directory
    assert not attempt.exists()


def test_kill_during_promotion_is_never_consumed(
    data: DataDir, runtime: ScriptRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = diamond()
    _execute(data, runtime, stages)
    (data.root / "work/b/value.txt").write_text("stale")  # an old output to be replaced
    changed = diamond({"b": {"sleep": 0.01}})

    class Killed(BaseException):
        pass

    import orchestrator.promote as promote_module

    real_replace = os.replace

    def replace(src: Path, dst: Path) -> None:
        if Path(src).parent == data.attempts("b") and Path(src).is_dir():
            assert (data.attempts("b") / "previous-output").is_dir()  # old output moved aside
            raise Killed  # … and the process dies before the attempt is renamed
        real_replace(src, dst)

    monkeypatch.setattr(promote_module.os, "replace", replace)
    with pytest.raises(Killed):
        _execute(data, runtime, changed)
    assert read_record(data, "b").status == "running"
    assert not (data.root / "work/b").exists()
    monkeypatch.setattr(promote_module.os, "replace", real_replace)
    _, outcome = _execute(data, runtime, changed)
    assert "b" in outcome.executed
    assert (data.root / "work/b/value.txt").read_text() == "b<a<>>"
    assert read_record(data, "d").status == "done"
    assert not (data.attempts("b") / "previous-output").exists()
