import json
from pathlib import Path

import pytest
from numpy.testing import assert_allclose
from spec_helpers import make_spec

from hm_shared.average import average_predictions, average_stage
from hm_shared.errors import HmDataError, SpecError
from hm_shared.predictions import Predictions, read_predictions, write_predictions
from hm_shared.spec import StageSpec


def test_mean_is_joined_by_id() -> None:
    # id 08291: (0.2 + 0.6 + 0.7) / 3 = 0.5 -> label 1 (>= 0.5)
    # id 10423: (0.9 + 0.3 + 0.0) / 3 = 0.4 -> label 0
    a = Predictions(("08291", "10423"), [0.2, 0.9], [0, 1], source="a.csv")
    b = Predictions(("10423", "08291"), [0.3, 0.6], [0, 1], source="b.csv")
    c = Predictions(("10423", "08291"), [0.0, 0.7], [0, 1], source="c.csv")
    avg = average_predictions([a, b, c])
    assert avg.ids.tolist() == ["08291", "10423"]
    assert_allclose(avg.proba, [0.5, 0.4])
    assert avg.label.tolist() == [1, 0]
    assert average_predictions([a, b, c], threshold=0.3).label.tolist() == [1, 1]


def test_mismatched_runs_name_the_files() -> None:
    a = Predictions(("1", "2"), [0.2, 0.9], [0, 1], source="runs/U/U1/predictions/dev_seen.csv")
    b = Predictions(("1", "3"), [0.2, 0.9], [0, 1], source="runs/U/U2/predictions/dev_seen.csv")
    with pytest.raises(HmDataError, match=r"U1/predictions/dev_seen.csv \(2\).*U2.*\(3\)"):
        average_predictions([a, b])


def _run(root: Path, run: str, fit: str, splits: dict[str, list[float]]) -> str:
    rel = f"work/runs/U/{run}/{fit}"
    for split, proba in splits.items():
        ids = [f"{i:05d}" for i in range(len(proba))]
        write_predictions(
            root / rel / "predictions" / f"{split}.csv",
            Predictions(ids, proba, [int(p >= 0.5) for p in proba]),
        )
    return rel


def _spec(root: Path, inputs: dict[str, str]) -> StageSpec:
    return make_spec("average/U", root, output="work/.attempts/average-U/k", inputs=inputs)


def test_average_stage_writes_every_split_and_says_which_runs_fed_it(tmp_path: Path) -> None:
    inputs = {
        "run:U1:train": _run(tmp_path, "U1", "train", {"dev_seen": [0.1, 0.8]}),
        "run:U2:train": _run(tmp_path, "U2", "train", {"dev_seen": [0.3, 0.4]}),
        "run:U1:traindev": _run(
            tmp_path, "U1", "traindev", {"test_seen": [0.5, 0.5, 1.0], "test_unseen": [0.0]}
        ),
        "run:U2:traindev": _run(tmp_path, "U2", "traindev", {"test_seen": [0.7, 0.1, 1.0]}),
    }
    spec = _spec(tmp_path, inputs)
    average_stage(spec)
    out = spec.output_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "average.json",
        "dev_seen.csv",
        "test_seen.csv",
        "test_unseen.csv",
    ]
    assert_allclose(read_predictions(out / "dev_seen.csv").proba, [0.2, 0.6])  # (0.1+0.3)/2, ...
    test_seen = read_predictions(out / "test_seen.csv")
    assert_allclose(test_seen.proba, [0.6, 0.3, 1.0])
    assert test_seen.label.tolist() == [1, 0, 1]
    assert_allclose(read_predictions(out / "test_unseen.csv").proba, [0.0])
    report = json.loads((out / "average.json").read_text())
    assert report["splits"]["dev_seen"]["runs"] == ["run:U1:train", "run:U2:train"]
    assert report["splits"]["test_unseen"] == {"runs": ["run:U1:traindev"], "memes": 1}


def test_average_stage_errors(tmp_path: Path) -> None:
    (tmp_path / "work/runs/U/U1/train").mkdir(parents=True)
    with pytest.raises(HmDataError, match=r"no predictions/<split>\.csv in the output of run:U1"):
        average_stage(_spec(tmp_path, {"run:U1:train": "work/runs/U/U1/train"}))
    with pytest.raises(SpecError, match=r"unexpected inputs \['prepared'\]"):
        average_stage(_spec(tmp_path, {"prepared": "work/prepared"}))
    with pytest.raises(SpecError, match="no 'run:<run>:<fit>' inputs"):
        average_stage(_spec(tmp_path, {}))
