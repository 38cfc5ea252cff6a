"""`load_spec`: what a stage process reads first. A spec the orchestrator wrote comes back equal;
anything else is a SpecError (exit 2 in the stage) naming the file and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hm_shared.errors import SpecError
from hm_shared.spec import SPEC_FORMAT_VERSION, StageSpec, load_spec


def _written(tmp_path: Path, make_spec: Callable[..., StageSpec], **changes: Any) -> Path:
    spec = make_spec("train/U/U36/train", tmp_path, inputs={"prepared": "work/prepared"})
    raw = json.loads(spec.model_dump_json()) | changes
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_written_spec_loads_equal(tmp_path: Path, make_spec: Callable[..., StageSpec]) -> None:
    spec = make_spec(
        "train/ES/ES36/traindev",
        tmp_path,
        inputs={"prepared": "work/prepared", "features": "work/features/vgattr3636"},
        params={"size": "base"},
        engine={"lr": 1e-5},
        run={
            "model": "ES",
            "run": "ES36",
            "seed": 36,
            "fit": "traindev",
            "predict": ["test_unseen"],
        },
        profile="full",
        device="cuda",
    )
    spec.write(tmp_path / "spec.json")
    loaded = load_spec(tmp_path / "spec.json")
    assert loaded == spec and loaded.env == "paddle" and loaded.kind == "train"
    assert loaded.path("features") == tmp_path / "work/features/vgattr3636"
    assert loaded.param("size") == "base" and loaded.engine == {"lr": 1e-5}
    assert loaded.model_run.predict == ("test_unseen",) and loaded.model_run.valid is None


def test_a_missing_file_or_bad_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"absent\.json: cannot read stage spec"):
        load_spec(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"stage": ')
    with pytest.raises(SpecError, match=r"bad\.json: cannot read stage spec"):
        load_spec(bad)


def test_another_format_version_is_refused(
    tmp_path: Path, make_spec: Callable[..., StageSpec]
) -> None:
    path = _written(tmp_path, make_spec, format_version=SPEC_FORMAT_VERSION + 1)
    expected = f"format_version {SPEC_FORMAT_VERSION + 1}, expected {SPEC_FORMAT_VERSION}"
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"kind": "training"}, "kind"),
        ({"env": "tensorflow"}, "env"),
        ({"profile": "medium"}, "profile"),
        ({"params_extra": {}}, "params_extra"),  # a field this code does not know
        ({"engine": ["lr"]}, "engine"),
        ({"inputs": {"prepared": 3}}, "inputs.prepared"),
        ({"run": {"model": "U", "run": "U36", "seed": 36, "fit": "dev"}}, "run.fit"),
        ({"run": {"model": "U", "run": "U36"}}, "run.seed"),
        ({"run": {"model": "U", "run": "U36", "seed": 36, "lr": 1}}, "run.lr"),  # a param
    ],
)
def test_an_invalid_field_is_named(
    tmp_path: Path, make_spec: Callable[..., StageSpec], changes: dict, named: str
) -> None:
    path = _written(tmp_path, make_spec, **changes)
    with pytest.raises(SpecError, match="invalid stage spec") as err:
        load_spec(path)
    assert str(path) in str(err.value) and named in str(err.value)


def test_an_input_or_param_the_spec_lacks_is_named(
    tmp_path: Path, make_spec: Callable[..., StageSpec]
) -> None:
    spec = load_spec(_written(tmp_path, make_spec))
    with pytest.raises(SpecError, match=r"spec has no input 'features'; it has \['prepared'\]"):
        spec.path("features")
    with pytest.raises(SpecError, match=r"stage train/U/U36/train: spec has no param 'size'"):
        spec.param("size")
    with pytest.raises(SpecError, match=r"train/U/U36/train: a train stage's spec needs `run`"):
        assert spec.model_run
