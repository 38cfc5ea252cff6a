"""The SLURM executor's job arguments and script (no cluster needed; tests/slurm has one)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.errors import RecipeError
from orchestrator.recipes import load_recipes
from orchestrator.slurm import SlurmOptions, batch_script, sbatch_args
from orchestrator.stages import build_stages

REPO = Path(__file__).resolve().parents[3]


def test_sbatch_args_per_kind_with_gpus_partition_account_and_extra(tmp_path: Path) -> None:
    log, workdir = tmp_path / "train.log", tmp_path / "data"
    options = SlurmOptions("gpu", "hm-lab", 2, ("--qos=long",))
    args = sbatch_args(options, "train", "train-U-U50-train", log, workdir)
    assert args == [
        "--parsable",
        "--job-name=train-U-U50-train",
        f"--output={log}",
        "--open-mode=append",
        f"--chdir={workdir}",
        "--cpus-per-task=4",
        "--mem=32G",
        "--time=24:00:00",
        "--gres=gpu:2",
        "--partition=gpu",
        "--account=hm-lab",
        "--qos=long",
    ]
    extract = sbatch_args(SlurmOptions(), "extract", "extract-attr", log, workdir)
    assert "--mem=16G" in extract and "--time=12:00:00" in extract
    assert not [a for a in extract if a.startswith(("--gres", "--partition", "--account"))]


def test_resource_flags_replace_every_kind_default(tmp_path: Path) -> None:
    options = SlurmOptions(cpus=1, mem="3G", time="30:00")
    for kind in ("extract", "pretrain", "train"):
        args = sbatch_args(options, kind, "x", tmp_path / "log", tmp_path)
        assert {"--cpus-per-task=1", "--mem=3G", "--time=30:00"} <= set(args), kind


def test_script_runs_the_stage_and_records_its_exit_code(tmp_path: Path) -> None:
    exit_file = tmp_path / "attempt" / "slurm-exit"
    exit_file.parent.mkdir()
    argv = ["python3", "-c", "import sys; print('it ran'); sys.exit(3)"]
    script = tmp_path / "job.sh"
    script.write_text(batch_script(argv, tmp_path, exit_file, "stage train/B/B42/train"))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 3 and done.stdout.strip() == "it ran"
    assert exit_file.read_text().strip() == "3"
    assert not exit_file.with_name("slurm-exit.part").exists()


def test_recipe_resources_sit_between_the_kind_default_and_the_flags(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes.toml"
    text = (REPO / "orchestrator" / "orchestrator" / "recipes.toml").read_text()
    recipes.write_text(
        text
        + '\n[slurm.train]\nmem = "48G"\ngpus = 1\n'
        + '\n[models.EL.slurm]\ntime = "2-00:00:00"\n'
    )
    stages = {s.id: s for s in build_stages(load_recipes(recipes), ("B", "EL"), "full")}
    el, b = stages["train/EL/EL36/train"], stages["train/B/B42/train"]
    assert el.resources == {"mem": "48G", "gpus": 1, "time": "2-00:00:00"}
    assert b.resources == {"mem": "48G", "gpus": 1}
    assert stages["prepare"].resources == {}
    log = tmp_path / "log"
    args = sbatch_args(SlurmOptions(), "train", "x", log, tmp_path, el.resources)
    assert {"--mem=48G", "--gres=gpu:1", "--time=2-00:00:00", "--cpus-per-task=4"} <= set(args)
    flags = SlurmOptions(mem="8G", gpus=2)  # the command line wins
    args = sbatch_args(flags, "train", "x", log, tmp_path, el.resources)
    assert {"--mem=8G", "--gres=gpu:2", "--time=2-00:00:00"} <= set(args)
    # resources are not params: the cache key of a stage does not change with them
    plain = {
        s.id: s
        for s in build_stages(
            load_recipes(REPO / "orchestrator/orchestrator/recipes.toml"), ("EL",), "full"
        )
    }
    assert plain["train/EL/EL36/train"].params == el.params


def test_bad_recipe_resources_name_the_key(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes.toml"
    text = (REPO / "orchestrator" / "orchestrator" / "recipes.toml").read_text()
    recipes.write_text(text + '\n[slurm.train]\nmemory = "48G"\n')
    with pytest.raises(RecipeError, match=r"slurm\.train\.memory"):
        load_recipes(recipes)


def test_script_says_what_the_node_cannot_reach(tmp_path: Path) -> None:
    exit_file = tmp_path / "slurm-exit"
    for workdir, argv, expected in (
        (tmp_path / "not-shared", ["python3", "-V"], "data directory"),
        (tmp_path, [str(tmp_path / "venvs/torch/bin/python"), "-V"], "--venvs"),
    ):
        script = tmp_path / "job.sh"
        script.write_text(batch_script(argv, workdir, exit_file, "x"))
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        assert done.returncode == 5 and expected in done.stderr, done.stderr
        assert "file system the nodes share" in done.stderr


def test_a_cancelled_script_runs_the_stop_command_and_waits_for_the_stage(tmp_path: Path) -> None:
    # the docker runtime's case: signals do not reach the container through the compose client,
    # so the script stops it by name (here: a stand-in that kills the stage) and waits for it
    pidfile, stopped = tmp_path / "stage.pid", tmp_path / "stopped"
    argv = ["bash", "-c", f"echo $$ > {pidfile}; exec sleep 60"]
    stop = ["bash", "-c", f"touch {stopped}; kill $(cat {pidfile})"]
    exit_file = tmp_path / "slurm-exit"
    script = tmp_path / "job.sh"
    script.write_text(batch_script(argv, tmp_path, exit_file, "x", stop))
    proc = subprocess.Popen(["bash", str(script)])
    deadline = time.monotonic() + 10
    while not pidfile.is_file() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM  # the stage's own end, recorded
    assert stopped.is_file() and exit_file.read_text().strip() == "143"
