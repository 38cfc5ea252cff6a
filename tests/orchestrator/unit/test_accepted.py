"""Plan-time param check and split against the tables the environments publish (the real files
of this checkout: every shipped recipe passes, a misspelt param is named with its model and stage,
the engine's settings reach the stage apart from the model's params)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from recipe_helpers import dump_toml

from orchestrator.accepted import accept_params
from orchestrator.api import REPO
from orchestrator.errors import RecipeError
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes
from orchestrator.stages import build_stages


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_every_shipped_recipe_passes(profile: str) -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    stages = build_stages(recipes, tuple(recipes.models), profile)
    accepted = accept_params(stages, REPO, DEFAULT_RECIPES)
    assert [s.id for s in accepted] == [s.id for s in stages]
    for before, after in zip(stages, accepted, strict=True):
        # a split, nothing lost or added: the recipe's one table is the two parts together
        assert {**after.params, **after.engine} == before.params, before.id
        assert not set(after.params) & set(after.engine), before.id


def test_the_engine_settings_are_told_apart() -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    stages = build_stages(recipes, ("U", "ES", "C"), "smoke")
    by_id = {s.id: s for s in accept_params(stages, REPO, DEFAULT_RECIPES)}
    train_u = next(s for i, s in by_id.items() if i.startswith("train/U/"))
    assert {"lr", "epochs", "batch_size"} <= set(train_u.engine)
    assert {"size", "max_len"} <= set(train_u.params) and "lr" not in train_u.params
    train_es = next(s for i, s in by_id.items() if i.startswith("train/ES/"))
    assert {"lr", "steps"} <= set(train_es.engine) and "size" in train_es.params
    assert by_id["embed/clip"].engine == {} and by_id["embed/clip"].params
    assert by_id["prepare"].engine == {}  # host stages: no table, every param theirs


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
        accept_params(stages, REPO, path)
    message = str(info.value)
    assert message.startswith(f"{path}: [models.{letter}] gives {kind} param(s) ['learning_rate']")
    assert f"(stage {kind}/{letter}/" in message and "accepted: " in message and "lr" in message


def test_an_environment_without_a_table_is_not_checked(tmp_path: Path) -> None:
    stages = build_stages(load_recipes(DEFAULT_RECIPES), ("B",), "smoke")
    (tmp_path / "containers/torch/hm_torch").mkdir(parents=True)
    unchecked = accept_params(stages, tmp_path, DEFAULT_RECIPES)  # no file: the stage checks
    assert unchecked == stages  # and gets every param as the model's
    table = tmp_path / "containers/torch/hm_torch/accepted_params.json"
    table.write_text(json.dumps({"train": {"U": {"model": [], "engine": ["lr"]}}}))
    with pytest.raises(RecipeError, match="model B has no train stage in the torch environment"):
        accept_params(stages, tmp_path, DEFAULT_RECIPES)


@pytest.mark.parametrize("letter", ["U", "ES"])
def test_the_run_is_not_a_param(tmp_path: Path, letter: str) -> None:
    """The seed is the run row's (`[[models.X.runs]] seed`): a `seed` param is refused."""
    path = _with_param(tmp_path, letter, ("smoke",), "seed")
    stages = build_stages(load_recipes(path), (letter,), "smoke")
    with pytest.raises(RecipeError, match=r"gives train param\(s\) \['seed'\]"):
        accept_params(stages, REPO, path)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{not json", "Invalid JSON"),
        ('{"train": {"B": ["lr"]}}', "train/B"),  # the table before the engine was apart
        ('{"train": {"B": {"model": [], "optimizer": ["lr"]}}}', "train/B/optimizer"),
    ],
)
def test_an_unreadable_table_is_named(tmp_path: Path, text: str, named: str) -> None:
    stages = build_stages(load_recipes(DEFAULT_RECIPES), ("B",), "smoke")
    table = tmp_path / "containers/torch/hm_torch/accepted_params.json"
    table.parent.mkdir(parents=True)
    table.write_text(text)
    with pytest.raises(RecipeError) as info:
        accept_params(stages, tmp_path, DEFAULT_RECIPES)
    message = str(info.value)
    assert message.startswith(f"{table}: not a table of accepted params") and named in message
    assert "python -m hm_torch.accepted --write" in message
