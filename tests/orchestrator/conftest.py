"""Fixtures shared by the orchestrator tests: tiny recipe files and data directories."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_RECIPES = """
[extract.vgattr3636]
weights = "attr"
min_boxes = 36
max_boxes = 36

[extract.vgattr5050]
weights = "attr"
min_boxes = 50
max_boxes = 50

[extract.vg5050]
weights = "plain"
min_boxes = 50
max_boxes = 50

[models.U]
env = "torch"
weights = [{ file = "uniter-large.pt", source = "https://example.org/uniter-large.pt" }]
params = { lr = 1e-5, epochs = 5 }
smoke = { epochs = 1 }
full = { checkpoint = "uniter-large.pt" }

[[models.U.runs]]
name = "U36"
seed = 36
features = "vgattr3636"

[[models.U.runs]]
name = "U50"
seed = 50
features = "vgattr5050"
params = { lr = 2e-5 }
full = { vocab = "vocab.txt" }

[models.O]
env = "torch"
params = { lr = 1e-5 }

[models.O.pretrain]
params = { epochs = 8 }
smoke = { epochs = 1 }

[[models.O.runs]]
name = "O50"
seed = 50
features = "vgattr5050"
"""


@pytest.fixture
def tiny_recipes(tmp_path: Path) -> Path:
    path = tmp_path / "recipes.toml"
    path.write_text(TINY_RECIPES)
    return path
