"""Plan-time param check against the tables the environments publish (the real files of this
checkout: every shipped recipe passes, a misspelt param is named with its model and stage)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from recipe_helpers import dump_toml

from orchestrator.accepted import check_params
from orchestrator.api import REPO
from orchestrator.errors import RecipeError
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes
from orchestrator.stages import build_stages


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_every_shipped_recipe_passes(profile: str) -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    stages = build_stages(recipes, tuple(recipes.models), profile)
    check_params(stages, REPO, DEFAULT_RECIPES)


def _with_param(
    tmp_path: Path, letter: str, where: tuple[str, ...], name: str = "learning_rate"
) -> Path:
    """The shipped recipes with `name` (default `learning_rate`, a misspelt `lr`) added to one
    smoke table."""
    full = tomllib.loads(DEFAULT_RECIPES.read_text())
    table = full["models"][letter]
    for key in where:
        table = table[key]
    table[name] = 1e-5
    path = tmp_path / "recipes.toml"
    path.write_text(dump_toml(full))
    return path


@pytest.mark.parametrize(
    ("letter", "where", "kind"),
    [
        ("B", ("smoke",), "train"),
        ("X", ("pretrain", "smoke"), "pretrain"),
        ("ES", ("smoke",), "train"),
    ],
)
def test_a_misspelt_param_is_named(
    tmp_path: Path, letter: str, where: tuple[str, ...], kind: str
) -> None:
    path = _with_param(tmp_path, letter, where)
    stages = build_stages(load_recipes(path), (letter,), "smoke")
    with pytest.raises(RecipeError) as info:
        check_params(stages, REPO, path)
    message = str(info.value)
    assert message.startswith(f"{path}: [models.{letter}] gives {kind} param(s) ['learning_rate']")
    assert f"(stage {kind}/{letter}/" in message and "accepted: " in message and "lr" in message


def test_an_environment_without_a_table_is_not_checked(tmp_path: Path) -> None:
    stages = build_stages(load_recipes(DEFAULT_RECIPES), ("B",), "smoke")
    (tmp_path / "containers/torch/hm_torch").mkdir(parents=True)
    check_params(stages, tmp_path, DEFAULT_RECIPES)  # no file: the stage itself checks
    table = tmp_path / "containers/torch/hm_torch/accepted_params.json"
    table.write_text(json.dumps({"train": {"U": ["lr"]}}))
    with pytest.raises(RecipeError, match="model B has no train stage in the torch environment"):
        check_params(stages, tmp_path, DEFAULT_RECIPES)


@pytest.mark.parametrize("letter", ["U", "ES"])
def test_the_run_is_not_a_param(tmp_path: Path, letter: str) -> None:
    """The seed is the run row's (`[[models.X.runs]] seed`): a `seed` param is refused."""
    path = _with_param(tmp_path, letter, ("smoke",), "seed")
    stages = build_stages(load_recipes(path), (letter,), "smoke")
    with pytest.raises(RecipeError, match=r"gives train param\(s\) \['seed'\]"):
        check_params(stages, REPO, path)
