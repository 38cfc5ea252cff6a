import json
import re
from pathlib import Path

import pytest
from spec_helpers import make_spec

from hm_shared.errors import HmDataError, SpecError
from hm_shared.predictions import Predictions, write_predictions
from hm_shared.report import render_report, report_stage, roc_svg, score_column
from hm_shared.spec import StageSpec


def test_roc_svg_points_by_hand() -> None:
    # y=[0, 1], p=[0.3, 0.6]: roc_curve gives (fpr, tpr) = (0,0), (0,1), (1,1). With a 24 px
    # margin and a 200 px plot, x = 24 + 200·fpr and y = 24 + 200·(1 − tpr).
    svg = roc_svg([0, 1], [0.3, 0.6], "U")
    assert 'points="24.0,224.0 24.0,24.0 224.0,24.0"' in svg
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')


def test_render_escapes_every_text_and_needs_no_script() -> None:
    score = score_column("<script>alert(1)</script>", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    timings = [
        {
            "stage": "train/U/<x>&y",
            "kind": "train",
            "runtime": "local",
            "start": "s",
            "end": "e",
            "seconds": 12.5,
            "cached": False,
        }
    ]
    page = render_report([score], {"<script>": 1.0}, timings)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "train/U/&lt;x&gt;&amp;y" in page
    assert '<td class="n">12.5000</td>' in page and '<td class="n">False</td>' in page
    # AUROC 0.75 and threshold 0.8 / accuracy 0.75 (computed by hand in test_metrics)
    assert '<td class="n">0.7500</td><td class="n">0.8000</td><td class="n">0.7500</td>' in page
    assert not re.search(r"(src|href)=", page)  # self-contained: no external assets


def _write_model(root: Path, letter: str, ids: list[str], proba: list[float]) -> str:
    rel = f"work/preds/{letter}"
    for split in ("dev_seen", "test_seen", "test_unseen"):
        write_predictions(
            root / rel / f"{split}.csv", Predictions(ids, proba, [int(p >= 0.5) for p in proba])
        )
    return rel


def _write_prepared(root: Path, labels: dict[str, int]) -> str:
    # the prepared dev_seen.jsonl layout of docs/architecture.md §3
    rows = [
        {"id": i, "img": f"img/{i}.png", "text": f"meme {i}", "label": y} for i, y in labels.items()
    ]
    path = root / "work/prepared/dev_seen.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return "work/prepared"


def _spec(root: Path, inputs: dict[str, str], timings: object) -> StageSpec:
    """A report spec whose `timings` input holds `timings` as JSON."""
    path = root / "work/state/timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(timings))
    return make_spec(
        "report",
        root,
        output="work/.attempts/report/k",
        inputs={**inputs, "timings": "work/state/timings.json"},
    )


def test_report_stage_writes_index_html(tmp_path: Path) -> None:
    ids = ["00011", "00012", "00013", "00014"]
    inputs = {
        "model:U": _write_model(tmp_path, "U", ids, [0.1, 0.4, 0.35, 0.8]),
        "model:O": _write_model(tmp_path, "O", ids, [0.2, 0.1, 0.9, 0.7]),
        "prepared": _write_prepared(tmp_path, {"00011": 0, "00012": 0, "00013": 1, "00014": 1}),
    }
    ens = tmp_path / "work/ensemble"
    fin = Predictions(ids, [0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1])
    write_predictions(ens / "FIN_dev_seen.csv", fin)
    (ens / "ensemble.json").write_text(json.dumps({"weights": {"O": 0.625, "U": 0.375}}))
    inputs["ensemble"] = "work/ensemble"
    timing = {
        "stage": "ensemble",
        "kind": "ensemble",
        "runtime": "local",
        "start": "t0",
        "end": "t1",
        "seconds": 1.25,
        "cached": True,
    }
    spec = _spec(tmp_path, inputs, [timing])
    report_stage(spec)
    page = (spec.output_dir / "index.html").read_text()
    assert page.count("<svg") == 3  # O, U, ensemble
    assert '<td>O</td><td class="n">1.0000</td>' in page  # O ranks both positives on top
    assert '<td>U</td><td class="n">0.7500</td>' in page
    assert '<td>ensemble</td><td class="n">1.0000</td>' in page
    assert '<td>O</td><td class="n">0.6250</td>' in page  # the weights table
    assert '<td class="n">1.2500</td><td class="n">True</td>' in page


def test_report_stage_errors(tmp_path: Path) -> None:
    prepared = _write_prepared(tmp_path, {"00011": 0, "00012": 1})
    model = _write_model(tmp_path, "U", ["00011", "00099"], [0.1, 0.9])
    with pytest.raises(HmDataError, match=r"1 predicted memes have no label \(00099\)"):
        report_stage(_spec(tmp_path, {"model:U": model, "prepared": prepared}, []))
    with pytest.raises(SpecError, match=r"unexpected inputs \['features'\]"):
        report_stage(_spec(tmp_path, {"features": "x", "prepared": prepared}, []))
    good = _write_model(tmp_path, "U", ["00011", "00012"], [0.1, 0.9])
    spec = _spec(tmp_path, {"model:U": good, "prepared": prepared}, {"stage": "x"})
    timings = spec.path("timings")
    with pytest.raises(HmDataError, match=r"expected a JSON list of stage timings") as info:
        report_stage(spec)
    assert info.value.path == timings
    row = {"stage": "x", "kind": "train", "runtime": "local", "start": "a", "end": "b"}
    spec = _spec(tmp_path, {"model:U": good, "prepared": prepared}, [row])
    with pytest.raises(HmDataError, match=r"0\.seconds\n  Field required"):
        report_stage(spec)
    timings.unlink()
    with pytest.raises(HmDataError, match="cannot read the stage timings"):
        report_stage(spec)
