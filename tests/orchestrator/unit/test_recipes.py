from pathlib import Path

import pytest

from orchestrator.errors import RecipeError, UnknownModelError
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes


def test_shipped_recipes_have_the_six_variants_and_b() -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    boxes = {name: (v.weights, v.min_boxes, v.max_boxes) for name, v in recipes.extract.items()}
    assert boxes["vgattr3636"] == ("attr", 36, 36)
    assert boxes["vgattr5050"] == ("attr", 50, 50)
    assert boxes["vgattr7272"] == ("attr", 72, 72)
    assert boxes["vgattr10100"] == ("attr", 10, 100)
    assert boxes["vg5050"] == ("plain", 50, 50)
    assert boxes["vg10100"] == ("plain", 10, 100)
    b = recipes.models["B"]
    assert b.env == "torch"
    assert [(r.name, r.seed) for r in b.runs][:2] == [("B42", 42), ("B43", 43)]
    assert b.weights[0].file == "resnet152-f82ba261.pth"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[extract.v]\nweights = "attr"\nmin_boxes = 1\nmax_boxes = 2\nmax_box = 3\n')
    with pytest.raises(RecipeError, match=r"r\.toml: extract\.v\.max_box: Extra inputs"):
        load_recipes(path)


def test_model_without_runs_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[models.B]\nenv = "torch"\n')
    with pytest.raises(RecipeError, match=r"models\.B\.runs"):
        load_recipes(path)


def test_undeclared_variant_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[models.U]\nenv = "torch"\n[[models.U.runs]]\nname = "U1"\nseed = 1\n'
        'features = "vgattr9999"\n'
    )
    with pytest.raises(RecipeError, match=r"vgattr9999.*no \[extract\.vgattr9999\] table"):
        load_recipes(path)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[models.B\n")
    with pytest.raises(RecipeError, match=r"r\.toml: not valid TOML"):
        load_recipes(path)


def test_duplicate_run_names(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[models.B]\nenv = "torch"\n[[models.B.runs]]\nname = "B1"\nseed = 1\n'
        '[[models.B.runs]]\nname = "B1"\nseed = 2\n'
    )
    with pytest.raises(RecipeError, match="repeated: \\['B1'\\]"):
        load_recipes(path)


def test_select(tiny_recipes: Path) -> None:
    recipes = load_recipes(tiny_recipes)
    assert recipes.select("all") == ("U", "O")
    assert recipes.select("O,U") == ("U", "O")  # recipe order
    with pytest.raises(UnknownModelError, match="unknown model Z; known models: U, O"):
        recipes.select("U,Z")


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        ('file = "../outside.pt", source = "https://x/y.pt"', r"file: Value error, expected a rel"),
        ('file = "/abs.pt", source = "https://x/y.pt"', r"file: Value error, expected a relative"),
        ('file = "a.pt", source = "x/y.pt"', r"source: String should match pattern"),
        ('file = "a", source = "https://x/y.tgz", member = "../p"', r"member: Value error"),
    ],
)
def test_weights_are_relative_paths_from_urls(tmp_path: Path, weight: str, message: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        f'[models.U]\nenv = "torch"\nweights = [{{ {weight} }}]\n'
        '[[models.U.runs]]\nname = "U1"\nseed = 1\n'
    )
    with pytest.raises(RecipeError, match=r"r\.toml: models\.U\.weights\.0\." + message):
        load_recipes(path)


def test_a_model_naming_an_undeclared_embedder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "recipes.toml"
    path.write_text(
        '[models.C]\nenv = "torch"\nembeddings = "siglip"\n[[models.C.runs]]\nname = "C1"\n'
        "seed = 1\n"
    )
    with pytest.raises(RecipeError, match=r"models\.C.*'siglip'.*\[embed\.siglip\]"):
        load_recipes(path)


def test_traindev_epochs_from_train_needs_early_stopping(tmp_path: Path) -> None:
    path = tmp_path / "recipes.toml"
    path.write_text(
        '[models.C]\nenv = "torch"\ntraindev_epochs_from_train = true\n'
        '[[models.C.runs]]\nname = "C1"\nseed = 1\n'
    )
    with pytest.raises(RecipeError, match="traindev_epochs_from_train needs early_stopping"):
        load_recipes(path)
