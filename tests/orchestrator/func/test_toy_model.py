"""Adding a model is one file plus one recipe section (issue 10; docs/architecture.md, "Adding a
model"): a copy of the repository's code gets a toy letter Z — one model file and its row in
`hm_torch.models.MODELS`, the published params rewritten — and a temporary recipe names it; the
orchestrator of that copy plans and runs it (local runtime, smoke profile) through the torch
venv. A recipe naming a letter hm_torch does not have stops at `plan` with exit 2.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_helpers import dump_toml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))

TOY_MODEL = '''"""Z: a linear layer over hashed character counts of the meme text (a toy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from hm_shared.dataset import Meme
from hm_shared.spec import StageSpec
from hm_torch.data import MemeDataset
from hm_torch.engine import ModelKit
from hm_torch.models.family import ModelEntry, field_names
from hm_torch.params import config_from_params


@dataclass(frozen=True)
class ToyConfig:
    buckets: int = 32


class ToyModel(nn.Module):
    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.linear = nn.Linear(buckets, 2)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.linear(batch["counts"])


def build_toy(spec: StageSpec, params: dict[str, Any], train: Sequence[Meme]) -> ModelKit:
    config = config_from_params(ToyConfig, params, f"stage {spec.stage}", "model")

    def encode(meme: Meme) -> dict[str, Tensor]:
        counts = torch.zeros(config.buckets)
        for char in meme.text:
            counts[ord(char) % config.buckets] += 1.0
        return {"counts": counts}

    return ModelKit(
        model=ToyModel(config.buckets),
        collate=default_collate,
        dataset=lambda memes: MemeDataset(memes, encode),
    )


ENTRY = ModelEntry(build=build_toy, params=field_names(ToyConfig))
'''

TOY_RECIPE = {
    "description": "toy: linear over hashed character counts",
    "env": "torch",
    "params": {"buckets": 32, "lr": 1e-2, "epochs": 3, "batch_size": 8, "num_workers": 0},
    "smoke": {"buckets": 16, "epochs": 2},
    "runs": [{"name": "Z1", "seed": 1}],
}


def _copy_with_toy(dest: Path) -> None:
    """The code of the repository (not its venvs or data) plus the toy model and its row."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("shared", "orchestrator", "containers"):
        shutil.copytree(REPO / part, dest / part, ignore=skip)
    models = dest / "containers/torch/hm_torch/models"
    (models / "toy.py").write_text(TOY_MODEL)
    table = (models / "__init__.py").read_text()
    table = table.replace("from hm_torch.models import ", "from hm_torch.models import toy, ", 1)
    row = '    "X": lxmert.ENTRY,\n'
    table = table.replace(row, row + '    "Z": toy.ENTRY,\n')
    assert '"Z": toy.ENTRY' in table
    (models / "__init__.py").write_text(table)


def _environ(copy: Path) -> dict[str, str]:
    # the copy's packages before the editable installs of the real ones
    paths = [copy / "orchestrator", copy / "shared", copy / "containers/torch"]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}


def _orchestrator(copy: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", *args]
    command += ["--recipes", str(tmp / "recipes.toml"), "--data", str(tmp / "data")]
    command += ["--profile", "smoke", "--topk", "20", "--venvs", str(VENVS)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=_environ(copy), cwd=tmp
    )


def test_a_toy_model_file_and_recipe_section_plan_and_run(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    _copy_with_toy(copy)
    write = [str(VENVS / "torch/bin/python"), "-m", "hm_torch.accepted", "--write"]
    subprocess.run(write, check=True, env=_environ(copy), capture_output=True)
    published = json.loads((copy / "containers/torch/hm_torch/accepted_params.json").read_text())
    assert "buckets" in published["train"]["Z"]["model"] and "Z" not in published["pretrain"]
    assert "lr" in published["train"]["Z"]["engine"]
    (tmp_path / "recipes.toml").write_text(dump_toml({"models": {"Z": TOY_RECIPE}}))
    (tmp_path / "data").mkdir()  # `run --synthetic` writes the dataset there

    plan = _orchestrator(copy, tmp_path, "plan", "--models", "Z")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "train/Z/Z1/traindev" in plan.stdout and "6 to run" in plan.stdout

    run = _orchestrator(copy, tmp_path, "run", "--models", "Z", "--runtime", "local", "--synthetic")
    assert run.returncode == 0, run.stdout + run.stderr
    fin = tmp_path / "data/work/ensemble/FIN_test_unseen.csv"
    rows = list(csv.DictReader(fin.open()))
    assert rows and all(0.0 <= float(r["proba"]) <= 1.0 for r in rows)
    fits = sorted((tmp_path / "data/work/runs/Z/Z1").glob("*/metrics.json"))
    assert fits, "no train stage output under work/runs/Z/Z1"
    assert {json.loads(p.read_text())["model"] for p in fits} == {"Z"}


def test_a_recipe_letter_no_environment_has_stops_plan(tmp_path: Path) -> None:
    (tmp_path / "recipes.toml").write_text(dump_toml({"models": {"Q": TOY_RECIPE}}))
    (tmp_path / "data").mkdir()
    result = _orchestrator(REPO, tmp_path, "plan", "--models", "Q")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "model Q has no train stage in the torch environment" in result.stderr
    assert "B, C, D, O, U, V, X" in result.stderr
