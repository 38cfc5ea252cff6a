"""fastText sentence vectors: shape, reproducibility, the vector table round trip."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hm_shared.errors import HmDataError
from hm_torch.text_fasttext import (
    load_vectors,
    normalise_text,
    save_vectors,
    train_sentence_vectors,
)

_WORDS = [
    "the",
    "florbs",
    "quiblings",
    "dance",
    "sing",
    "cook",
    "win",
    "lose",
    "jump",
    "every",
    "day",
    "soup",
    "chess",
    "bridge",
    "are",
    "great",
    "make",
    "best",
    "love",
    "picnic",
    "always",
    "bring",
    "snacks",
]
_RNG = random.Random(0)
TEXTS = [" ".join(_RNG.choices(_WORDS, k=8)) for _ in range(60)]


def test_vectors_have_the_dimension_and_repeat_exactly() -> None:
    first = train_sentence_vectors(TEXTS, dim=12, bucket=20000, seed=3)
    second = train_sentence_vectors(TEXTS, dim=12, bucket=20000, seed=3)
    a, b = first("the florbs dance\nlol"), second("the florbs dance\nlol")
    assert a.shape == (12,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # one worker, one seed: bit for bit
    other = train_sentence_vectors(TEXTS, dim=12, bucket=20000, seed=4)("the florbs dance lol")
    assert not np.array_equal(a, other)  # the seed matters (seed averaging varies the text side)


def test_vectors_are_the_same_in_another_process() -> None:
    # A container and the host must agree: a fresh interpreter with another hash seed.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from test_text_fasttext import TEXTS; "
        "from hm_torch.text_fasttext import train_sentence_vectors as t; "
        "sys.stdout.write(t(TEXTS, dim=12, bucket=20000)('the florbs dance').tobytes().hex())"
    )
    here = train_sentence_vectors(TEXTS, dim=12, bucket=20000)("the florbs dance")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code, str(Path(__file__).parent)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout == here.tobytes().hex()


def test_sentence_vector_is_the_mean_of_unit_word_vectors() -> None:
    vectors = train_sentence_vectors(TEXTS, dim=12, bucket=20000)
    words = [vectors.model.wv[w] for w in ("soup", "chess")]
    expected = np.mean([w / np.linalg.norm(w) for w in words], axis=0)
    np.testing.assert_allclose(vectors("Soup  CHESS"), expected, rtol=1e-6)
    assert not vectors("").any()  # no words: the zero vector, not NaN
    assert np.isfinite(vectors("zzzzqx")).all()  # unknown word: from its character n-grams


def test_vector_table_round_trips(tmp_path: Path) -> None:
    table = {"a b": np.arange(3, dtype=np.float32), "c/d\ne": np.ones(3, dtype=np.float32)}
    save_vectors(tmp_path / "v.npz", table)
    loaded = load_vectors(tmp_path / "v.npz")
    assert loaded.keys() == table.keys()
    for text, vector in table.items():
        np.testing.assert_array_equal(loaded[text], vector)


@pytest.mark.parametrize("bad", ["object", "truncated", "wrong_keys"])
def test_a_bad_vector_table_is_named_and_never_unpickled(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "text_vectors.npz"
    if bad == "object":  # a pickled payload: loading it would run code
        np.savez(path, texts=np.array([{"x": 1}], dtype=object), vectors=np.ones((1, 3)))
    elif bad == "truncated":
        save_vectors(path, {"a": np.ones(3, dtype=np.float32)})
        path.write_bytes(path.read_bytes()[:40])
    else:
        np.savez(path, words=np.array(["a"]), vectors=np.ones((1, 3), dtype=np.float32))
    with pytest.raises(HmDataError, match=r"text_vectors\.npz: not a text-vector table \("):
        load_vectors(path)


def test_normalise_text_makes_one_lowercase_line() -> None:
    assert normalise_text("  Hello\nWORLD \t x ") == "hello world x"
