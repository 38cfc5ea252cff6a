"""The prepare stage in-process: derived splits, the clean-train rule, topk, read-only dataset."""

import json
import random
from pathlib import Path

import pytest
from spec_helpers import make_spec

from hm_shared.dataset import SPLITS, Meme, read_prepared
from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import sha256_file
from hm_shared.prepare import clean_train, id_rank, prepare, prepare_stage, subset_topk
from hm_shared.spec import StageSpec
from hm_shared.synthetic import generate, plan

OUTPUTS = {f"{s}.jsonl" for s in (*SPLITS, "traindev", "pretrain")} | {
    "removed.jsonl",
    "summary.json",
    "images.json",
}


def _ids(path: Path) -> list[str]:
    return [m.id for m in read_prepared(path)]


def test_outputs_of_the_default_dataset(make_hm, tmp_path: Path) -> None:
    out, hm = tmp_path / "prepared", make_hm()
    summary = prepare(hm, out)
    assert {p.name for p in out.iterdir()} == OUTPUTS  # nothing else, no temp files
    train_ids = [f"{i:05d}" for i in range(1, 9)]
    assert _ids(out / "train.jsonl") == [*train_ids, "00021", "00022"]  # dev_unseen extras
    assert _ids(out / "dev_seen.jsonl") == ["00011", "00012", "00013", "00014"]
    assert _ids(out / "dev_unseen.jsonl") == ["00013", "00014", "00021", "00022"]
    assert _ids(out / "traindev.jsonl") == [
        *train_ids,
        "00021",
        "00022",
        "00011",
        "00012",
        "00013",
        "00014",
    ]
    pretrain = read_prepared(out / "pretrain.jsonl")
    assert [m.id for m in pretrain] == [
        *train_ids,
        "00011",
        "00012",
        "00013",
        "00014",
        "00021",
        "00022",
        "00031",
        "00032",
        "00033",
        "00041",
        "00042",
        "00043",
    ]
    assert all(m.label is None for m in pretrain)
    assert all(m.label is None for m in read_prepared(out / "test_unseen.jsonl"))
    assert (out / "removed.jsonl").read_text() == ""
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"] == {
        "memes": 10,
        "hateful": 4,
        "not_hateful": 6,
        "unlabelled": 0,
    }
    assert summary["splits"]["test_seen"]["unlabelled"] == 3
    assert summary["released"] == {
        "train": 8,
        "dev_seen": 4,
        "dev_unseen": 4,
        "test_seen": 3,
        "test_unseen": 3,
    }
    assert summary["removed"] == {"duplicate": 0, "ambiguous": 0}
    assert summary["dev_unseen_added_to_train"] == 2
    assert summary["topk"] is None
    assert str(tmp_path) not in (out / "summary.json").read_text()  # outputs hold no abs paths
    images = json.loads((out / "images.json").read_text())
    named = {
        m.img for p in out.glob("*.jsonl") if p.name != "removed.jsonl" for m in read_prepared(p)
    }
    assert list(images) == sorted(named)
    assert images["img/00001.png"] == sha256_file(hm / "img/00001.png")


def test_clean_train_rule(make_hm, tmp_path: Path) -> None:
    row = make_hm.row
    train = [
        row("00005", 1, "Same  TEXT"),
        row("00003", 1, "same text"),
        row("00010", 1, "same text "),
        row("00020", 0, "ambiguous"),
        row("00021", 1, "ambiguous"),
        row("00060", 0, "other text"),  # same image as 00061, other text: kept
        row("00061", 0, "another text"),
        row("00070", 1, "shared text"),
        row("00071", 0, "shared text"),  # other images: kept
        row("00080", 0, "kept"),
    ]
    root = make_hm(
        {"train": train, "dev_unseen": [row("00013", 1)]},
        same_image={"00003": "00005", "00010": "00005", "00021": "00020", "00061": "00060"},
    )
    out = tmp_path / "prepared"
    summary = prepare(root, out)
    assert _ids(out / "train.jsonl") == ["00003", "00060", "00061", "00070", "00071", "00080"]
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"], r["kept"], r["group"]) for r in removed] == [
        ("00005", "duplicate", "00003", ["00003", "00005", "00010"]),
        ("00010", "duplicate", "00003", ["00003", "00005", "00010"]),
        ("00020", "ambiguous", None, ["00020", "00021"]),
        ("00021", "ambiguous", None, ["00020", "00021"]),
    ]
    assert removed[0]["text"] == "Same  TEXT" and removed[0]["label"] == 1
    assert summary["removed"] == {"duplicate": 2, "ambiguous": 2}
    # pretrain keeps one of each image/text pair, the lowest id, whatever the labels.
    pretrain = _ids(out / "pretrain.jsonl")
    assert {"00003", "00020"} <= set(pretrain)
    assert not {"00005", "00010", "00021"} & set(pretrain)


def test_clean_train_keeps_lowest_id_numerically() -> None:
    memes = [Meme(i, f"img/{i}.png", "t", 0) for i in ("10000", "9999")]
    kept, removed = clean_train(memes, lambda m: "h")
    assert [m.id for m in kept] == ["9999"] and removed[0]["kept"] == "9999"


def test_dev_unseen_ids_of_dev_seen_are_not_added_to_train(make_hm, tmp_path: Path) -> None:
    prepare(make_hm(), tmp_path / "p")
    assert not set(_ids(tmp_path / "p/train.jsonl")) & set(_ids(tmp_path / "p/dev_seen.jsonl"))


def test_topk_never_adds_a_dev_seen_meme_to_train(make_hm, tmp_path: Path) -> None:
    row = make_hm.row
    dev_seen = [row(f"{i:05d}", i % 2) for i in range(100, 130)]
    dev_unseen = dev_seen[:20] + [row(f"{i:05d}", 0) for i in range(200, 210)]
    prepare(make_hm({"dev_seen": dev_seen, "dev_unseen": dev_unseen}), tmp_path / "p", topk=8)
    train = set(_ids(tmp_path / "p/train.jsonl"))
    assert not train & {r["id"] for r in dev_seen}
    assert train & {f"{i:05d}" for i in range(200, 210)}


def test_an_id_in_train_and_dev_seen_is_an_error_naming_both_files(make_hm, tmp_path) -> None:
    rows = make_hm.default_rows()
    rows["dev_seen"][2] = make_hm.row("00004", 0)
    root = make_hm(rows)
    with pytest.raises(HmDataError) as info:
        prepare(root, tmp_path / "p")
    message = str(info.value)
    assert message.startswith(
        f"{root / 'dev_seen.jsonl'}:3: meme 00004 is also in {root / 'train.jsonl'} (line 4)"
    )


def test_an_id_in_train_and_test_unseen_is_an_error(make_hm, tmp_path) -> None:
    rows = make_hm.default_rows()
    rows["test_unseen"].append(make_hm.row("00007", None))
    root = make_hm(rows)
    with pytest.raises(HmDataError) as info:
        prepare(root, tmp_path / "p", topk=2)  # checked on the whole dataset, not the subset
    assert str(info.value).startswith(
        f"{root / 'test_unseen.jsonl'}:4: meme 00007 is also in {root / 'train.jsonl'} (line 7)"
    )
    assert not (tmp_path / "p").exists()


def test_topk_keeps_n_per_split_with_both_classes(tmp_path: Path) -> None:
    root = generate(
        tmp_path / "hm",
        seed=1,
        sizes={"train": 40, "dev_seen": 12, "dev_unseen": 12, "test_seen": 9, "test_unseen": 9},
    )
    out = tmp_path / "p"
    summary = prepare(root, out, topk=5)
    for split in SPLITS[1:]:  # prepared train = the train subset, cleaned, + dev_unseen extras
        memes = read_prepared(out / f"{split}.jsonl")
        assert len(memes) == 5, split
        if split in ("dev_seen", "dev_unseen"):
            assert {m.label for m in memes} == {0, 1}, split
    # The derived splits are built from the subsets.
    dev_seen = set(_ids(out / "dev_seen.jsonl"))
    extras = [i for i in _ids(out / "dev_unseen.jsonl") if i not in dev_seen]
    assert summary["splits"]["train"]["memes"] == 5 - summary["removed"]["duplicate"] - summary[
        "removed"
    ]["ambiguous"] + len(extras)
    assert summary["splits"]["traindev"]["memes"] == summary["splits"]["train"]["memes"] + 5
    assert summary["topk"] == 5 and summary["released"]["train"] == 40


def test_topk_is_deterministic_and_independent_of_row_order(make_hm, tmp_path: Path) -> None:
    rows = make_hm.default_rows()
    first = prepare(make_hm(rows), tmp_path / "a", topk=3)
    for split_rows in rows.values():
        random.Random(0).shuffle(split_rows)
    second = prepare(make_hm(rows), tmp_path / "b", topk=3)
    assert first == second
    for name in OUTPUTS - {"summary.json"}:
        a = sorted((tmp_path / "a" / name).read_text().splitlines())
        assert a == sorted((tmp_path / "b" / name).read_text().splitlines()), name


def test_subset_topk_chooses_by_id_hash_and_keeps_order() -> None:
    memes = [Meme(f"{i:05d}", f"img/{i:05d}.png", "t", None) for i in range(50)]
    chosen = subset_topk(memes, 7)
    expected = set(sorted((m.id for m in memes), key=id_rank)[:7])
    assert {m.id for m in chosen} == expected
    assert chosen == [m for m in memes if m.id in expected]
    assert subset_topk(memes, 80) == memes


@pytest.mark.parametrize(
    ("n_pos", "topk", "want_pos"), [(1, 2, 1), (1, 10, 1), (30, 10, 3), (50, 10, 5), (99, 3, 2)]
)
def test_subset_topk_stratifies(n_pos: int, topk: int, want_pos: int) -> None:
    memes = [Meme(f"{i:05d}", f"img/{i:05d}.png", "t", int(i < n_pos)) for i in range(100)]
    labels = [m.label for m in subset_topk(memes, topk)]
    assert len(labels) == topk and labels.count(1) == want_pos


def test_topk_one_with_two_classes_keeps_one_row() -> None:
    memes = [Meme(f"{i:05d}", f"img/{i:05d}.png", "t", i % 2) for i in range(10)]
    assert len(subset_topk(memes, 1)) == 1


@pytest.mark.parametrize("topk", [0, -3, 2.5, True, "5"])
def test_prepare_rejects_bad_topk(make_hm, tmp_path: Path, topk) -> None:
    with pytest.raises(ValueError, match="topk must be a positive integer"):
        prepare(make_hm(), tmp_path / "p", topk=topk)


def test_read_only_dataset_is_never_changed(synthetic_hm: Path, tmp_path: Path, snapshot) -> None:
    # synthetic_hm is chmod read-only already; root ignores that, so compare the tree too.
    assert not (synthetic_hm / "train.jsonl").stat().st_mode & 0o222
    before = snapshot(synthetic_hm)
    prepare(synthetic_hm, tmp_path / "p", topk=None)
    assert snapshot(synthetic_hm) == before


def test_read_only_custom_dataset(make_hm, tmp_path: Path, snapshot, read_only) -> None:
    root = read_only(make_hm())
    before = snapshot(root)
    prepare(root, tmp_path / "p", topk=3)
    assert snapshot(root) == before


def test_synthetic_duplicates_are_removed(synthetic_prepared: Path, synthetic_sizes) -> None:
    memes = plan(0, synthetic_sizes)
    copies = {m.kind: m for m in memes["train"] if m.kind in ("duplicate", "ambiguous")}
    assert set(copies) == {"duplicate", "ambiguous"}
    removed = [json.loads(line) for line in (synthetic_prepared / "removed.jsonl").open()]
    dup, amb = copies["duplicate"], copies["ambiguous"]
    assert sorted((r["id"], r["reason"]) for r in removed) == sorted(
        [
            (max(dup.stem, f"{dup.twin_of:05d}"), "duplicate"),
            (amb.stem, "ambiguous"),
            (f"{amb.twin_of:05d}", "ambiguous"),
        ]
    )
    summary = json.loads((synthetic_prepared / "summary.json").read_text())
    assert (
        summary["splits"]["train"]["memes"]
        == synthetic_sizes["train"] - 3 + summary["dev_unseen_added_to_train"]
    )


def test_integer_and_string_id_files_prepare_identically(tmp_path: Path) -> None:
    sizes = {"train": 12, "dev_seen": 6, "dev_unseen": 6, "test_seen": 4, "test_unseen": 4}
    generate(tmp_path / "str", seed=4, sizes=sizes)
    generate(tmp_path / "int", seed=4, sizes=sizes, int_ids=True)
    assert (tmp_path / "str/train.jsonl").read_text() != (tmp_path / "int/train.jsonl").read_text()
    prepare(tmp_path / "str", tmp_path / "p_str")
    prepare(tmp_path / "int", tmp_path / "p_int")
    for name in OUTPUTS:
        assert (tmp_path / "p_str" / name).read_bytes() == (tmp_path / "p_int" / name).read_bytes()


def _spec(root: Path, **params) -> StageSpec:
    return make_spec(
        "prepare", root, output="work/.attempts/prepare/k", inputs={"hm": "hm"}, params=params
    )


def test_prepare_stage_writes_into_the_attempt_dir(make_hm, tmp_path: Path) -> None:
    make_hm().rename(tmp_path / "hm")
    prepare_stage(_spec(tmp_path, topk=2))
    out = tmp_path / "work/.attempts/prepare/k"
    assert {p.name for p in out.iterdir()} == OUTPUTS
    assert len(_ids(out / "test_seen.jsonl")) == 2


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"topk": 0}, "param topk must be a positive integer or null, got 0"),
        ({"topk": "3"}, "got '3'"),
        ({"topk": None, "lr": 1}, r"params \['lr'\]"),
    ],
)
def test_prepare_stage_rejects_bad_specs(tmp_path: Path, params, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        prepare_stage(_spec(tmp_path, **params))


def test_prepare_stage_rejects_unknown_inputs(tmp_path: Path) -> None:
    spec = _spec(tmp_path).model_copy(update={"inputs": {"hm": "hm", "x": "y"}})
    with pytest.raises(SpecError, match=r"unexpected inputs \['x'\]"):
        prepare_stage(spec)
