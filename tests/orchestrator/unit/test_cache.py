import os
from pathlib import Path

import pytest

from orchestrator.cache import (
    MISSING,
    HashCache,
    code_version,
    key_parts,
    output_files,
    output_hash,
    output_problem,
    stage_key,
)
from orchestrator.stages import InputRef, StageDef

STAGE = StageDef(
    id="train/B/B42/train",
    kind="train",
    env="torch",
    output="work/runs/B/B42/train",
    params={"lr": 1e-4, "seed": 42},
)
BASE = {
    "stage": STAGE,
    "inputs": {"prepared": "p1", "hm": "h1"},
    "locks": {"torch": "L"},
    "code": {"torch": "C"},
}


def _key(**change) -> str:
    args = {**BASE, **change}
    return stage_key(key_parts(args["stage"], args["inputs"], args["locks"], args["code"]))


def test_key_is_stable_and_order_independent() -> None:
    assert _key() == _key()
    assert _key(inputs={"hm": "h1", "prepared": "p1"}) == _key()
    reordered = StageDef(
        id=STAGE.id, kind="train", env="torch", output=STAGE.output, params={"seed": 42, "lr": 1e-4}
    )
    assert _key(stage=reordered) == _key()
    assert len(_key()) == 64


def test_key_ignores_where_it_runs() -> None:
    moved = StageDef(
        id=STAGE.id, kind="train", env="torch", output="elsewhere/out", params=STAGE.params
    )
    assert _key(stage=moved) == _key()  # output path, data root, device: not in the key


@pytest.mark.parametrize(
    "change",
    [
        {"inputs": {"prepared": "p2", "hm": "h1"}},
        {"inputs": {"prepared": "p1"}},
        {"locks": {"torch": "L2"}},
        {"code": {"torch": "C2"}},
        {
            "stage": StageDef(
                id=STAGE.id,
                kind="train",
                env="torch",
                output=STAGE.output,
                params={"lr": 2e-4, "seed": 42},
            )
        },
        {
            "stage": StageDef(
                id=STAGE.id,
                kind="train",
                env="torch",
                output=STAGE.output,
                params=STAGE.params,
                profile="full",
            )
        },
        {
            "stage": StageDef(
                id=STAGE.id, kind="pretrain", env="torch", output=STAGE.output, params=STAGE.params
            )
        },
    ],
)
def test_key_changes_with_every_part(change: dict) -> None:
    assert _key(**change) != _key()


def test_hash_cache_reuses_by_stat_and_sees_changes(tmp_path: Path) -> None:
    (tmp_path / "hm" / "img").mkdir(parents=True)
    a = tmp_path / "hm" / "train.jsonl"
    a.write_text("one\n")
    (tmp_path / "hm" / "img" / "1.png").write_bytes(b"png")
    cache = HashCache(tmp_path, tmp_path / "hashes.json")
    first = cache.input_hash(InputRef("hm"))
    cache.save()
    assert (tmp_path / "hashes.json").is_file()
    again = HashCache(tmp_path, tmp_path / "hashes.json")
    assert again.input_hash(InputRef("hm")) == first and not again._dirty  # served from stat
    a.write_text("two\n")
    assert HashCache(tmp_path, tmp_path / "hashes.json").input_hash(InputRef("hm")) != first
    assert cache.input_hash(InputRef("nothing")) == MISSING


def test_hash_cache_files_narrow_the_input(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "a.pth").write_bytes(b"a")
    cache = HashCache(tmp_path, tmp_path / "hashes.json")
    ref = InputRef("weights", files=("a.pth",))
    before = cache.input_hash(ref)
    (tmp_path / "weights" / "other.pth").write_bytes(b"b")  # not this stage's file
    assert cache.input_hash(ref) == before
    assert cache.input_hash(InputRef("weights", files=("missing.pth",))) != before


def test_code_version_tracks_py_sources(tmp_path: Path) -> None:
    pkg = tmp_path / "shared" / "hm_shared"
    env = tmp_path / "containers" / "torch" / "hm_torch"
    pkg.mkdir(parents=True)
    env.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (env / "b.py").write_text("y = 1\n")
    host, torch = code_version(tmp_path, "host"), code_version(tmp_path, "torch")
    assert host != torch
    (env / "notes.txt").write_text("not code")
    assert code_version(tmp_path, "torch") == torch
    (env / "b.py").write_text("y = 2\n")
    assert code_version(tmp_path, "torch") != torch
    assert code_version(tmp_path, "host") == host  # host stages do not depend on hm_torch


def test_output_hash_ignores_spec_stats_and_temp_files(tmp_path: Path) -> None:
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "dev_seen.csv").write_text("id,proba,label\n")
    before = output_hash(tmp_path)
    (tmp_path / "spec.json").write_text('{"data_root": "/data"}')
    (tmp_path / ".x.tmp").write_text("partial")
    # how the output was made (a resumed extraction counts more detector passes), not what it is
    (tmp_path / "stats.json").write_text('{"detector_images": 85}')
    assert output_hash(tmp_path) == before
    assert "stats.json" not in output_files(tmp_path)
    os.remove(tmp_path / "predictions" / "dev_seen.csv")
    assert output_hash(tmp_path) != before


def test_output_problem_sees_files_deleted_resized_or_added(tmp_path: Path) -> None:
    out = tmp_path / "ensemble"
    (out / "sub").mkdir(parents=True)
    (out / "FIN_dev_seen.csv").write_text("id,proba,label\n")
    (out / "sub" / "w.csv").write_text("x")
    (out / "spec.json").write_text("{}")  # the orchestrator's, not checked
    recorded = output_files(out)
    assert recorded == {"FIN_dev_seen.csv": 15, "sub/w.csv": 1}
    assert output_problem(out, recorded) is None
    (out / "spec.json").unlink()
    (out / "x.csv.tmp").write_text("killed write")
    assert output_problem(out, recorded) is None
    (out / "FIN_dev_seen.csv").write_text("id,proba\n")
    (out / "sub" / "w.csv").unlink()
    (out / "extra.txt").write_text("")
    assert output_problem(out, recorded) == (
        "output changed: sub/w.csv missing, FIN_dev_seen.csv 15→9 bytes, extra.txt added"
    )
    for i in range(3):
        (out / f"more{i}").write_text("")
    assert output_problem(out, recorded).endswith("extra.txt added (+3 more)")
    # a record from before file lists: the folder's presence is all it can check
    assert output_problem(out, None) is None
    assert output_problem(tmp_path / "absent", recorded) == "output missing"


def test_a_weight_directory_is_hashed_by_its_files(tmp_path: Path) -> None:
    # ERNIE-ViL's weights are a params/ directory of one file per tensor.
    params = tmp_path / "weights" / "ernie-vil-base" / "params"
    params.mkdir(parents=True)
    cache = HashCache(tmp_path, tmp_path / "hashes.json")
    ref = InputRef("weights", files=("ernie-vil-base/params",))
    empty = cache.input_hash(ref)
    (params / "encoder_layer_0_w").write_bytes(b"w0")
    filled = cache.input_hash(ref)
    assert filled != empty and filled != cache.input_hash(InputRef("weights", files=("x",)))
    (params / "encoder_layer_0_w").write_bytes(b"w1")
    assert cache.input_hash(ref) not in (empty, filled)


def test_a_symlinked_image_folder_is_hashed_by_its_images(tmp_path: Path) -> None:
    # data/hm/img -> a folder on another disk: changing an image there must change the key
    elsewhere = tmp_path / "disk2" / "img"
    elsewhere.mkdir(parents=True)
    (elsewhere / "1.png").write_bytes(b"png")
    (tmp_path / "hm").mkdir()
    (tmp_path / "hm" / "train.jsonl").write_text("one\n")
    (tmp_path / "hm" / "img").symlink_to(elsewhere, target_is_directory=True)
    first = HashCache(tmp_path, tmp_path / "hashes.json").input_hash(InputRef("hm"))
    (elsewhere / "1.png").write_bytes(b"another png")
    assert HashCache(tmp_path, tmp_path / "hashes.json").input_hash(InputRef("hm")) != first


def test_a_link_loop_in_the_dataset_is_named(tmp_path: Path) -> None:
    from hm_shared.errors import HmDataError

    (tmp_path / "hm" / "img").mkdir(parents=True)
    (tmp_path / "hm" / "img" / "1.png").write_bytes(b"png")
    (tmp_path / "hm" / "img" / "again").symlink_to(tmp_path / "hm", target_is_directory=True)
    with pytest.raises(HmDataError, match=r"img/again: a link loop"):
        HashCache(tmp_path, tmp_path / "hashes.json").input_hash(InputRef("hm"))
