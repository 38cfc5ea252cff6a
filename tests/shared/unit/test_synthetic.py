"""The synthetic dataset: real layout, both-modality label rule, confounders, determinism."""

import json
import subprocess
import sys
from collections import Counter
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hm_shared.dataset import LABELLED_SPLITS, SPLITS, load_dataset
from hm_shared.errors import HmDataError
from hm_shared.synthetic import (
    DEFAULT_SIZES,
    REAL_SIZES,
    TARGETS,
    generate,
    label_rule,
    plan,
    render,
    scaled_sizes,
)

TINY = {"train": 10, "dev_seen": 6, "dev_unseen": 6, "test_seen": 4, "test_unseen": 4}


def _rows(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


def test_layout_matches_the_real_release(synthetic_hm: Path, synthetic_sizes) -> None:
    assert sorted(p.name for p in synthetic_hm.iterdir()) == sorted(
        ["img", *(f"{s}.jsonl" for s in SPLITS)]
    )
    data = load_dataset(synthetic_hm)  # validates ids, labels and every image
    assert {s: len(m) for s, m in data.items()} == synthetic_sizes
    for split in SPLITS:
        for row in _rows(synthetic_hm, split):
            assert list(row) == (
                ["id", "img", "label", "text"]
                if split in LABELLED_SPLITS
                else ["id", "img", "text"]
            )
            assert len(row["id"]) == 5 and row["id"].isdigit()
            assert row["img"] == f"img/{row['id']}.png"
    referenced = {m.img for memes in data.values() for m in memes}
    assert {f"img/{p.name}" for p in (synthetic_hm / "img").iterdir()} == referenced
    for img in sorted(referenced)[:20]:
        with Image.open(synthetic_hm / img) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert all(200 <= side <= 600 for side in image.size)


def test_default_and_real_sizes() -> None:
    memes = plan(0)
    assert {s: len(m) for s, m in memes.items()} == DEFAULT_SIZES
    assert scaled_sizes(1) == REAL_SIZES
    real = plan(0, REAL_SIZES)  # planning only: cheap even at the real size
    assert {s: len(m) for s, m in real.items()} == REAL_SIZES
    ids = [m.id for s in SPLITS if s != "dev_unseen" for m in real[s]]
    assert len(ids) == len(set(ids)) == 12_000


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", seed=7, sizes=TINY)
    b = generate(tmp_path / "b", seed=7, sizes=TINY)
    c = generate(tmp_path / "c", seed=8, sizes=TINY)

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert files(a) == files(b)
    assert files(a) != files(c)


def test_label_rule_and_confounders(synthetic_sizes) -> None:
    memes = plan(0, synthetic_sizes)
    for split in SPLITS:
        by_id = {m.id: m for m in memes[split]}
        kinds = Counter(m.kind for m in memes[split])
        for meme in memes[split]:
            rule = label_rule(meme.scene.category, meme.attack)
            assert meme.label == (1 - rule if meme.kind == "ambiguous" else rule)
            if meme.kind == "hateful":
                assert meme.label == 1
        if split == "dev_unseen":
            continue
        assert kinds["hateful"] == kinds["image_twin"] == kinds["text_twin"] > 0
        for meme in memes[split]:
            if meme.kind == "image_twin":  # same text, a non-target picture
                source = by_id[meme.twin_of]
                assert meme.text == source.text and not meme.scene.category.target
                assert meme.label == 0
            if meme.kind == "text_twin":  # same picture, a benign text
                source = by_id[meme.twin_of]
                assert meme.scene == source.scene and not meme.attack and meme.label == 0
    assert Counter(m.kind for m in memes["train"])["duplicate"] >= 1


def test_neither_modality_alone_decides_the_label() -> None:
    memes = [m for split in ("train", "dev_seen") for m in plan(3)[split]]
    attack_labels = {m.label for m in memes if m.attack}
    target_labels = {m.label for m in memes if m.scene.category.target}
    assert attack_labels == {0, 1} and target_labels == {0, 1}
    # Both together decide it exactly (ambiguous duplicates are label noise by design).
    assert all(
        m.label == label_rule(m.scene.category, m.attack) for m in memes if m.kind != "ambiguous"
    )


def test_dev_unseen_mostly_shares_dev_seen_ids_and_adds_benign_memes(synthetic_hm: Path) -> None:
    data = load_dataset(synthetic_hm)
    seen = {m.id: m for m in data["dev_seen"]}
    unseen = data["dev_unseen"]
    shared = [m for m in unseen if m.id in seen]
    assert len(shared) / len(unseen) > 0.6
    assert all(seen[m.id] == m for m in shared)
    assert {m.label for m in unseen if m.id not in seen} == {0}


def test_test_splits_have_no_label_and_both_classes_elsewhere(synthetic_hm: Path) -> None:
    data = load_dataset(synthetic_hm)
    for split in ("test_seen", "test_unseen"):
        assert all("label" not in row for row in _rows(synthetic_hm, split))
    for split in LABELLED_SPLITS:
        assert {m.label for m in data[split]} == {0, 1}


def test_integer_ids_are_the_stem_without_leading_zeros(tmp_path: Path) -> None:
    memes = plan(2, TINY)
    root = generate(tmp_path / "hm", seed=2, sizes=TINY, int_ids=True)
    rows = _rows(root, "train")
    assert all(isinstance(r["id"], int) and r["img"] == f"img/{r['id']:05d}.png" for r in rows)
    assert [m.id for m in load_dataset(root)["train"]] == [m.stem for m in memes["train"]]


def test_picture_shows_its_category_colour_prominently() -> None:
    memes = plan(5, TINY)
    for meme in memes["train"][:6]:
        png = render(meme.scene, meme.text)
        pixels = np.asarray(Image.open(BytesIO(png)).convert("RGB"), dtype=np.int32)
        distance = np.abs(pixels - np.array(meme.scene.category.colour)).max(axis=-1)
        assert (distance <= 25).mean() > 0.05, meme.scene.category.name


def test_text_is_drawn_on_the_picture() -> None:
    meme = next(m for m in plan(0, TINY)["train"] if m.scene.category in TARGETS)
    with_text = np.asarray(Image.open(BytesIO(render(meme.scene, meme.text))))
    other = np.asarray(Image.open(BytesIO(render(meme.scene, "x"))))
    assert with_text.shape == other.shape and (with_text != other).any()
    assert (with_text == 255).all(axis=-1).sum() > 100  # white letters


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user file")
    with pytest.raises(HmDataError, match="not empty"):
        generate(tmp_path, sizes=TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("sizes", [{"train": 0}, TINY | {"val": 3}, TINY | {"dev_seen": -1}])
def test_bad_sizes(sizes) -> None:
    with pytest.raises(ValueError, match="sizes must give a positive count"):
        plan(0, sizes)


def test_cli(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "hm_shared.synthetic",
        str(tmp_path / "hm"),
        "--seed",
        "3",
        "--scale",
        "0.004",
        "--int-ids",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = load_dataset(tmp_path / "hm")
    assert {s: len(m) for s, m in data.items()} == scaled_sizes(0.004)
    assert isinstance(_rows(tmp_path / "hm", "dev_seen")[0]["id"], int)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 3 and "not empty" in again.stderr
