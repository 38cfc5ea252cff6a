"""The real CLI, through CliRunner and as a subprocess (for exit codes), on tmp data dirs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from recipe_helpers import dump_toml

from orchestrator.cli import cli
from orchestrator.recipes import DEFAULT_RECIPES

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ORCHESTRATOR = str(BIN / "orchestrator")

HOLD_LOCK = """
import sys, time
from pathlib import Path
from orchestrator.lock import DataLock
DataLock(Path(sys.argv[1]), Path(sys.argv[2])).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _commands(group: click.Command = cli, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    yield path, group
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from _commands(command, (*path, name))


COMMANDS = list(_commands())


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "orchestrator" for p, _ in COMMANDS]
)
def test_every_command_has_help_and_is_documented(
    path: tuple[str, ...], command: click.Command
) -> None:
    assert command.help, f"{path} is missing its help"
    if not isinstance(command, click.Group):
        assert "Example:" in command.help and "\b" in command.help, f"{path}: no Example block"
    heading = f"## orchestrator {' '.join(path)}".rstrip()
    assert heading + "\n" in (REPO / "docs/cli.md").read_text()


def test_cli_reference_is_up_to_date() -> None:
    proc = subprocess.run(
        [str(BIN / "cog"), "--check", "docs/cli.md"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\nregenerate: cog -r docs/cli.md"


def test_unknown_model_letter_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "--models", "B,Q", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown model Q; known models: B" in result.output
    proc = subprocess.run(
        [ORCHESTRATOR, "run", "--models", "Q", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Invalid value for '--models': unknown model Q" in proc.stderr
    assert not (tmp_path / "work").exists()


def test_missing_weights_in_full_profile_fail_before_anything_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [ORCHESTRATOR, "run", "--models", "B", "--profile", "full", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stderr
    assert str(tmp_path / "weights" / "resnet152-f82ba261.pth") in proc.stderr
    assert "https://download.pytorch.org/models/resnet152-f82ba261.pth" in proc.stderr
    assert "--profile smoke" in proc.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "hm").exists()
    planned = CliRunner().invoke(
        cli, ["plan", "--models", "B", "--profile", "full", "--data", str(tmp_path)]
    )
    assert planned.exit_code == 0
    assert "missing pretrained files" in planned.output
    assert "resnet152-f82ba261.pth" in planned.output


def test_second_orchestrator_gets_exit_4_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "work" / "state" / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        proc = subprocess.run(
            [ORCHESTRATOR, "run", "--models", "B", "--profile", "smoke", "--data", str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 4, proc.stderr
        assert f"PID {holder.pid}" in proc.stderr and str(tmp_path) in proc.stderr
        assert not (tmp_path / "hm").exists()  # nothing happened under someone else's lock
    finally:
        holder.kill()
        holder.wait()


def test_plan_and_status_on_an_empty_data_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    planned = runner.invoke(
        cli,
        [
            "plan",
            "--models",
            "B",
            "--profile",
            "smoke",
            "--topk",
            "5",
            "--data",
            str(tmp_path),
            "--show-config",
        ],
    )
    assert planned.exit_code == 0, planned.output
    assert "generates the synthetic dataset" in planned.output
    assert re.search(r"^prepare +run +no record$", planned.output, re.MULTILINE)
    assert 'params={"topk": 5}' in planned.output
    assert "8 to run, 0 cached" in planned.output
    status = runner.invoke(cli, ["status", "--data", str(tmp_path)])
    assert status.exit_code == 0
    assert re.search(
        r"^train/B/B42/train +missing +work/runs/B/B42/train$",
        status.output,
        re.MULTILINE,
    )
    assert "final predictions: none yet" in status.output


def test_bad_gpus_and_recipe_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["run", "--models", "B", "--gpus", "0,,1", "--data", str(tmp_path)])
    assert bad.exit_code == 2 and "distinct GPU indices" in bad.output
    recipes = tmp_path / "r.toml"
    recipes.write_text('[models.B]\nenv = "torch"\nrunz = 1\n')
    broken = runner.invoke(cli, ["plan", "--recipes", str(recipes), "--models", "B"])
    assert broken.exit_code == 2
    assert f"{recipes}: models.B.runz: Extra inputs are not permitted" in broken.output


def test_weight_directories_count_as_present_only_with_files(tmp_path: Path) -> None:
    def missing() -> str:
        planned = CliRunner().invoke(
            cli, ["plan", "--models", "ES", "--profile", "full", "--data", str(tmp_path)]
        )
        assert planned.exit_code == 0, planned.output
        return planned.output

    for name in ("ernie-vil-base/params", "ernie-vil-base-vcr/params"):
        (tmp_path / "weights" / name).mkdir(parents=True)
    assert "ernie-vil-base/params" in missing()  # an empty params/ is not a download
    (tmp_path / "weights" / "ernie-vil-base/params" / "word_embedding").write_bytes(b"\0" * 8)
    output = missing()
    assert "ernie-vil-base/params" not in output and "ernie-vil-base-vcr/params" in output
    assert "ernie-vil-base/vocab.txt" in output  # the tokenizer's vocabulary is checked too


def _dataset(tmp_path: Path) -> Path:
    from hm_shared.synthetic import generate

    data = tmp_path / "data"
    sizes = {"train": 8, "dev_seen": 4, "dev_unseen": 2, "test_seen": 2, "test_unseen": 2}
    generate(data / "hm", seed=1, sizes=sizes)
    return data


@pytest.mark.parametrize("kind", ["fifo", "dangling link"])
def test_a_fifo_or_dangling_link_in_the_dataset_is_named_not_hung_on(
    tmp_path: Path, kind: str
) -> None:
    import os

    data = _dataset(tmp_path)
    odd = data / "hm" / "img" / "99999.png"
    if kind == "fifo":
        os.mkfifo(odd)  # reading it would block forever
    else:
        odd.symlink_to(tmp_path / "gone.png")
    args = ["--models", "B", "--topk", "4", "--profile", "smoke", "--data", str(data)]
    for verb in ("plan", "run"):
        done = subprocess.run(
            [ORCHESTRATOR, verb, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 3, (verb, done.stderr)
        assert str(odd) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (data / "work" / "runs").exists()


def test_a_mistyped_data_dir_is_an_error_not_a_synthetic_run(tmp_path: Path) -> None:
    typo = tmp_path / "dta"
    args = ["--models", "B", "--profile", "smoke", "--data", str(typo)]
    for verb in ("plan", "run"):
        done = subprocess.run([ORCHESTRATOR, verb, *args], capture_output=True, text=True)
        assert done.returncode == 3, done.stderr
        assert f"Error: {typo}: the data directory does not exist" in done.stderr
        assert "--synthetic" in done.stderr
        assert not typo.exists()  # nothing created, nothing generated
    # an existing data dir without hm/: named, nothing generated, nothing run
    typo.mkdir()
    done = subprocess.run([ORCHESTRATOR, "run", *args], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert f"Error: {typo / 'hm'}: no dataset here; expected the Hateful Memes files" in done.stderr
    assert not (typo / "hm").exists() and not (typo / "work/state/records").exists()


def test_a_misspelt_recipe_param_stops_plan_and_run_before_any_stage(tmp_path: Path) -> None:
    full = tomllib.loads(DEFAULT_RECIPES.read_text())
    full["models"]["B"]["smoke"]["learning_rate"] = 1e-5
    recipes = tmp_path / "recipes.toml"
    recipes.write_text(dump_toml(full))
    data = tmp_path / "data"
    args = ["--recipes", str(recipes), "--models", "B", "--profile", "smoke", "--data", str(data)]
    for verb in ("plan", "run"):
        done = subprocess.run(
            [ORCHESTRATOR, verb, *args, *(["--synthetic"] if verb == "run" else [])],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stderr
        assert "[models.B] gives train param(s) ['learning_rate']" in done.stderr
        assert not data.exists()  # no dataset generated, no prepare, no extraction


def test_plan_takes_the_run_command_line_and_checks_the_runtime(tmp_path: Path) -> None:
    import os

    data = _dataset(tmp_path)
    args = ["--models", "B", "--topk", "4", "--profile", "smoke", "--data", str(data)]
    args += ["--jobs", "2", "--on-error", "keep-going", "--synthetic", "--venvs", str(tmp_path)]
    done = subprocess.run(
        [ORCHESTRATOR, "plan", *args, "--runtime", "docker"],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert done.returncode == 0, done.stderr
    assert "runtime docker (`run` stops on these before any stage):" in done.stdout
    assert "no Docker engine answers" in done.stdout or "client is not installed" in done.stdout
    local = subprocess.run(
        [ORCHESTRATOR, "plan", *args, "--runtime", "local"], capture_output=True, text=True
    )
    assert local.returncode == 0, local.stderr
    assert f"note: {tmp_path / 'torch'} is missing or stale: `run` builds it first" in local.stdout
    assert "stops on these" not in local.stdout
