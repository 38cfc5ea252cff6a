"""Region tokens, 5-d positions, the two-file merge, and the word-piece encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import xor_memes

from hm_paddle.inputs import (
    GLOBAL_POSITION,
    ErnieTokenizer,
    MemeInputs,
    box_positions,
    image_tokens,
)
from hm_shared.errors import HmDataError
from hm_shared.features import RegionFeatures


def _regions(n: int, value: float, dim: int = 4) -> RegionFeatures:
    boxes = np.tile(np.array([[10, 20, 30, 60]], np.float32), (n, 1))
    return RegionFeatures(
        "00001",
        100,
        200,
        boxes,
        np.full((n, dim), value, np.float32),
        np.zeros(n, np.int64),
        np.ones(n, np.float32),
        np.zeros(n, np.int64),
        np.ones(n, np.float32),
    )


def test_box_positions_are_normalised_corners_and_area() -> None:
    pos = box_positions(np.array([[10, 20, 30, 60]], np.float32), image_h=100, image_w=200)
    np.testing.assert_allclose(pos, [[0.05, 0.2, 0.15, 0.6, 20 * 40 / (100 * 200)]], rtol=1e-6)


def test_single_set_gets_a_global_mean_token() -> None:
    main = _regions(3, 0.0)
    main.features[:] = np.arange(12, dtype=np.float32).reshape(3, 4)
    feats, pos = image_tokens(main)
    assert feats.shape == (4, 4) and pos.shape == (4, 5)
    np.testing.assert_allclose(feats[0], main.features.mean(0))
    np.testing.assert_array_equal(pos[0], GLOBAL_POSITION)


def test_merge_weights_the_global_token_by_box_count() -> None:
    feats, pos = image_tokens(_regions(36, 1.0), _regions(10, 3.0))
    assert feats.shape == (1 + 36 + 10, 4) and pos.shape == (47, 5)
    np.testing.assert_allclose(feats[0], (1.0 * 37 + 3.0 * 11) / 48)
    assert (feats[1:37] == 1.0).all() and (feats[37:] == 3.0).all()


def test_merge_caps_at_100_regions_extra_boxes_first() -> None:
    feats, _ = image_tokens(_regions(72, 1.0), _regions(60, 3.0))
    assert feats.shape[0] == 100  # 1 global + 39 main + 60 extra
    assert (feats[1:40] == 1.0).all() and (feats[40:] == 3.0).all()
    feats, _ = image_tokens(_regions(36, 1.0), _regions(100, 3.0))
    # 99 extra boxes leave room for the global token only: main boxes count only through it.
    assert feats.shape[0] == 100 and (feats[1:] == 3.0).all()
    np.testing.assert_allclose(feats[0], (37 + 3.0 * 101) / 138)


def test_tokenizer_from_vocab_file(tmp_path: Path) -> None:
    vocab = (
        ["[PAD]"]
        + [f"[unused{i}]" for i in range(99)]
        + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s"]
    )
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = ErnieTokenizer.from_file(tmp_path / "vocab.txt")
    assert tok.encode("Hello WORLDS", 128) == [101, 104, 105, 106, 102]
    assert tok.encode("hello hello hello", 4) == [101, 104, 104, 102]
    with pytest.raises(HmDataError, match=r"vocab\.txt"):
        ErnieTokenizer.from_file(tmp_path / "absent.txt")


def test_batch_pads_text_and_regions() -> None:
    memes = xor_memes(3, seed=0, dim=8)
    tok = ErnieTokenizer.train([t for _, t, _ in memes.rows], 60)
    data = MemeInputs(memes.rows, tok, memes.main, memes.extra)
    batch = data.batch([0, 1, 2])
    assert batch.input_ids.shape == batch.text_mask.shape
    assert batch.image_feats.shape[:2] == batch.image_mask.shape
    assert batch.image_loc.shape[2] == 5 and batch.image_feats.shape[2] == 8
    lengths = batch.image_mask.sum(1)
    assert lengths.tolist() == [1 + 6 + memes.extra[i].num_boxes for i in batch.ids]
    assert (batch.input_ids[:, 0] == tok.cls_id).all()


def test_missing_regions_name_the_memes() -> None:
    memes = xor_memes(2, seed=0, dim=8)
    tok = ErnieTokenizer.train([t for _, t, _ in memes.rows], 60)
    main = dict(memes.main)
    main.pop("00001")
    with pytest.raises(HmDataError, match=r"1 meme\(s\) of dev\.jsonl .*00001"):
        MemeInputs(memes.rows, tok, main, None, source="dev.jsonl")


TRAIN_VOCAB = """
import sys
from hm_paddle.inputs import ErnieTokenizer
texts = ["the cat sat on the mat", "a dog ate the cat's hat", "mats and hats", "dogs sat"] * 3
sys.stdout.write(ErnieTokenizer.train(texts, 60).vocab_text())
"""


def test_smoke_vocabulary_is_the_same_in_every_process() -> None:
    # HF's WordPiece trainer breaks ties in hash order: other PYTHONHASHSEEDs, other ids
    import os
    import subprocess
    import sys

    vocabs = [
        subprocess.run(
            [sys.executable, "-c", TRAIN_VOCAB],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    ]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    tokens = vocabs[0].splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "the" in tokens and "##t" in tokens and len(tokens) == len(set(tokens))
