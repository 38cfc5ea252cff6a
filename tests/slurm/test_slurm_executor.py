"""`orchestrator run --executor slurm` against a real (one-node) SLURM cluster.

Every test submits real jobs through sbatch and watches them through squeue/scontrol: a smoke
run of B and U equal to the local executor's, a stage that fails, jobs cancelled from outside
and killed by their time limit, an orchestrator killed with a job in flight that re-attaches
to it when started again, and jobs that run their stage under the docker runtime.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_helpers import one_run_recipes

from orchestrator.datadir import DataDir
from orchestrator.recipes import DEFAULT_RECIPES
from orchestrator.records import read_record

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("cluster")]

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
SMOKE = ["--topk", "20", "--profile", "smoke", "--synthetic"]
# Small jobs: the CI node has 2 CPUs; --jobs 2 keeps two jobs in flight
SLURM = ["--executor", "slurm", "--slurm-cpus", "1", "--slurm-mem", "3G", "--jobs", "2"]


def orchestrator(args: list[str], timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORCHESTRATOR, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def b_epochs(tmp_path: Path, epochs: int) -> Path:
    """The project's recipes with B's smoke schedule at `epochs` epochs (longer jobs)."""
    text, count = re.subn(
        r"^(\[models\.B\.smoke\][^\[]*?)^epochs = 2$",
        rf"\g<1>epochs = {epochs}",
        DEFAULT_RECIPES.read_text(),
        count=1,
        flags=re.MULTILINE | re.DOTALL,
    )
    assert count == 1
    path = tmp_path / "recipes.toml"
    path.write_text(text)
    return path


def records(data: Path) -> dict[str, dict]:
    folder = data / "work" / "state" / "records"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def queued(job_id: str) -> str | None:
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


def wait_for_job(data: Path, slug: str, state: str = "RUNNING", timeout: float = 300) -> str:
    """The job id of a stage once SLURM says it is in `state`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read_record(DataDir(data), slug)
        if record is not None and record.job_id and queued(record.job_id) == state:
            return record.job_id
        time.sleep(0.5)
    raise AssertionError(f"{slug} never had a {state} SLURM job")


def test_b_and_u_on_slurm_equal_the_local_executor(tmp_path: Path, venvs: Path) -> None:
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    recipes = tmp_path / "recipes.toml"  # one run each: every kind of stage, half the stages
    recipes.write_text(one_run_recipes(DEFAULT_RECIPES, ["B", "U"]))
    common = ["run", "--recipes", str(recipes), "--models", "B,U", *SMOKE, "--venvs", str(venvs)]
    done = orchestrator([*common, "--data", str(local)])
    assert done.returncode == 0, done.stderr[-3000:]
    done = orchestrator([*common, "--data", str(cluster), *SLURM])
    assert done.returncode == 0, done.stderr[-3000:]

    mine, theirs = records(local), records(cluster)
    assert mine.keys() == theirs.keys()
    for slug, record in theirs.items():
        assert record["status"] == "done", slug
        assert record["key"] == mine[slug]["key"], slug  # where a stage ran is not in its key
        if record["kind"] != "report":  # the report shows each run's own stage timings
            assert record["output_hash"] == mine[slug]["output_hash"], slug
        if record["kind"] in ("extract", "train"):
            assert record["job_id"], slug  # a SLURM job
            # its script is kept in the output, outside the hash
            script = cluster / record["output"] / "slurm-job.sh"
            assert "python" in script.read_text() and "-m hm_" in script.read_text()
        else:
            assert record["job_id"] is None, slug  # host stages run on this machine
    for split in ("dev_seen", "test_seen", "test_unseen"):
        name = f"work/ensemble/FIN_{split}.csv"
        assert (cluster / name).read_bytes() == (local / name).read_bytes(), name


def test_a_failing_stage_names_its_slurm_job_and_log(tmp_path: Path, venvs: Path) -> None:
    recipes = tmp_path / "bad.toml"
    recipes.write_text(
        re.sub(
            r"^\[models\.B\.smoke\].*$",
            "\\g<0>\nlog_every = 0",
            DEFAULT_RECIPES.read_text(),
            count=1,
            flags=re.MULTILINE,
        )
    )
    data = tmp_path / "data"
    args = ["run", "--recipes", str(recipes), "--models", "B", *SMOKE, "--venvs", str(venvs)]
    done = orchestrator([*args, "--data", str(data), *SLURM])
    assert done.returncode == 2, done.stderr[-3000:]  # hm_torch's SpecError, through SLURM
    record = read_record(DataDir(data), "train-B-B42-train")
    assert record is not None and record.status == "failed" and record.job_id
    assert f"SLURM job {record.job_id} FAILED" in done.stderr
    assert str(data / record.log) in done.stderr
    assert "log_every" in done.stderr  # the stage's own message, from its log tail


def test_jobs_cancelled_from_outside_or_out_of_time_fail_with_their_state(
    tmp_path: Path, venvs: Path
) -> None:
    # B's two fits, each far longer than the one-minute limit: one is cancelled with scancel
    # as soon as it runs, the other hits its time limit.
    data = tmp_path / "data"
    recipes = b_epochs(tmp_path, 5000)
    args = ["run", "--recipes", str(recipes), "--models", "B", *SMOKE, "--venvs", str(venvs)]
    args += ["--data", str(data), *SLURM, "--slurm-time", "1", "--on-error", "keep-going"]
    proc = subprocess.Popen(
        [ORCHESTRATOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    cancelled = wait_for_job(data, "train-B-B42-train")
    subprocess.run(["scancel", cancelled], check=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr[-3000:]
    assert f"SLURM job {cancelled} CANCELLED" in stderr
    timed_out = read_record(DataDir(data), "train-B-B42-traindev")
    assert timed_out is not None and timed_out.status == "failed"
    assert f"SLURM job {timed_out.job_id} TIMEOUT" in stderr
    assert queued(cancelled) is None and queued(str(timed_out.job_id)) is None


def test_a_killed_orchestrator_reattaches_to_its_running_job(tmp_path: Path, venvs: Path) -> None:
    data = tmp_path / "data"
    recipes = b_epochs(tmp_path, 12)
    args = ["run", "--recipes", str(recipes), "--models", "B", *SMOKE, "--venvs", str(venvs)]
    args += ["--data", str(data), *SLURM]
    proc = subprocess.Popen([ORCHESTRATOR, *args], start_new_session=True)
    job = wait_for_job(data, "train-B-B42-train")
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator dies; the SLURM job does not
    proc.wait()
    assert queued(job) in ("RUNNING", "COMPLETING", "PENDING")
    # plan and status name the job and its state
    planned = orchestrator(["plan", *args[1:]])
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert re.search(
        rf"train/B/B42/train .*SLURM job {job} (RUNNING|COMPLETING|COMPLETED)", planned.stdout
    )
    state = orchestrator(
        ["status", "--recipes", str(recipes), "--models", "B", "--data", str(data)]
    )
    assert re.search(
        rf"train/B/B42/train .*SLURM job {job} (RUNNING|COMPLETING|COMPLETED)", state.stdout
    )
    done = orchestrator(args)
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_record(DataDir(data), "train-B-B42-train")
    assert record is not None and record.status == "done"
    assert record.job_id == job  # no second submission: the rerun watched the same job
    log = (data / record.log).read_text()
    assert f"re-attached to SLURM job {job}" in log
    assert log.count("runtime local gpu") == 1  # one start line: the stage started once


def containers_of(data: Path) -> list[str]:
    attempts = data.resolve() / "work" / ".attempts"
    done = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "org.hateful-memes.attempt"}}'],
        capture_output=True,
        text=True,
    )
    return [line for line in done.stdout.split() if line.startswith(str(attempts))]


@pytest.mark.usefixtures("docker_images")
def test_docker_runtime_jobs_run_and_a_cancelled_one_stops_its_container(
    tmp_path: Path, venvs: Path
) -> None:
    # --runtime docker under SLURM: the job runs `docker compose run`, whose client forwards no
    # signal; the job script stops the container by name when SLURM cancels the job.
    data = tmp_path / "data"
    args = ["run", "--models", "B", *SMOKE, "--venvs", str(venvs), "--runtime", "docker"]
    done = orchestrator([*args, "--data", str(data), *SLURM])
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_record(DataDir(data), "train-B-B42-train")
    assert record is not None and record.status == "done" and record.job_id
    assert record.runtime == "docker" and record.image

    long = tmp_path / "long"
    recipes = b_epochs(tmp_path, 5000)
    args = ["run", "--recipes", str(recipes), "--models", "B", *SMOKE, "--venvs", str(venvs)]
    args += ["--runtime", "docker", "--data", str(long), *SLURM[:-1], "1"]  # --jobs 1
    proc = subprocess.Popen(
        [ORCHESTRATOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    job = wait_for_job(long, "train-B-B42-train")
    deadline = time.monotonic() + 120
    while not containers_of(long):
        assert time.monotonic() < deadline, "the stage's container never started"
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and f"SLURM job {job} CANCELLED" in stderr, stderr[-3000:]
    deadline = time.monotonic() + 60
    while containers_of(long):
        assert time.monotonic() < deadline, f"containers left running: {containers_of(long)}"
        time.sleep(0.5)
