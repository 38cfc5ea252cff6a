"""`python -m hm_shared prepare --spec …` as a real process on real files (architecture.md §2)."""

import json
import subprocess
import sys
from pathlib import Path

from spec_helpers import make_spec

from hm_shared.dataset import SPLITS, read_prepared

OUTPUTS = {f"{s}.jsonl" for s in (*SPLITS, "traindev", "pretrain")} | {
    "removed.jsonl",
    "summary.json",
    "images.json",
}


def _run(root: Path, topk: object = None) -> tuple[subprocess.CompletedProcess, Path]:
    spec = make_spec(
        "prepare",
        root,
        output="work/.attempts/prepare/0123456789ab",
        inputs={"hm": "hm"},
        params={"topk": topk},
    )
    spec_path = spec.output_dir / "spec.json"
    spec.write(spec_path)
    proc = subprocess.run(
        [sys.executable, "-m", "hm_shared", "prepare", "--spec", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, spec.output_dir


def test_prepare_stage_on_the_synthetic_dataset(
    synthetic_hm: Path, tmp_path: Path, snapshot
) -> None:
    (tmp_path / "hm").symlink_to(synthetic_hm)  # the user's read-only dataset
    before = snapshot(synthetic_hm)
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == OUTPUTS | {"spec.json"}
    assert snapshot(synthetic_hm) == before
    summary = json.loads((out / "summary.json").read_text())
    for name in OUTPUTS - {"removed.jsonl", "summary.json", "images.json"}:
        memes = read_prepared(out / name)
        assert summary["splits"][name.removesuffix(".jsonl")]["memes"] == len(memes)
        assert all((synthetic_hm / m.img).is_file() for m in memes)
    assert summary["removed"]["duplicate"] >= 1 and summary["removed"]["ambiguous"] >= 2
    # Same input, same spec: same bytes (the cache relies on it).
    first = {name: (out / name).read_bytes() for name in OUTPUTS}
    proc, out = _run(tmp_path)
    assert proc.returncode == 0
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == first


def test_prepare_stage_topk(synthetic_hm: Path, tmp_path: Path) -> None:
    (tmp_path / "hm").symlink_to(synthetic_hm)
    proc, out = _run(tmp_path, topk=6)
    assert proc.returncode == 0, proc.stderr
    for split in SPLITS[1:]:
        assert len(read_prepared(out / f"{split}.jsonl")) == 6
    assert json.loads((out / "summary.json").read_text())["topk"] == 6


def test_broken_dataset_exits_3_naming_file_and_line(make_hm, tmp_path: Path) -> None:
    rows = make_hm.default_rows()
    rows["dev_seen"][2] = '{"id": "00013", "img": "img/00013.png", "text": "x", "label": 7}'
    make_hm(rows).rename(tmp_path / "hm")
    proc, out = _run(tmp_path)
    assert proc.returncode == 3
    assert f"{tmp_path / 'hm' / 'dev_seen.jsonl'}:3: label 7 is not 0 or 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name for p in out.iterdir()] == ["spec.json"]  # nothing half-written


def test_missing_dataset_exits_3(tmp_path: Path) -> None:
    proc, _ = _run(tmp_path)
    assert proc.returncode == 3
    assert f"{tmp_path / 'hm'}: dataset directory not found" in proc.stderr


def test_bad_topk_is_a_spec_error(make_hm, tmp_path: Path) -> None:
    make_hm().rename(tmp_path / "hm")
    proc, _ = _run(tmp_path, topk="all")
    assert proc.returncode == 2
    assert "param topk must be a positive integer or null, got 'all'" in proc.stderr
