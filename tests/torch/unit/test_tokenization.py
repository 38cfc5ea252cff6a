"""Word-piece tokenisation: trained smoke vocabularies, BERT vocab files, segments, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hm_shared.errors import HmDataError, MissingWeightsError
from hm_torch.tokenization import SPECIAL_TOKENS, load_tokenizer, pad_ids, train_vocab

TEXTS = ["when you finally get the joke", "this meme is about  cats", "dogs and cats and joke"] * 5


def test_trained_vocab_is_small_with_pad_first(tmp_path: Path) -> None:
    vocab = train_vocab(TEXTS, tmp_path, vocab_size=80)
    lines = vocab.read_text(encoding="utf-8").splitlines()
    assert lines[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    tok = load_tokenizer(vocab, lowercase=True)
    assert tok.pad_id == 0 and tok.vocab_size == len(lines) <= 100
    assert [p for p in tmp_path.iterdir()] == [vocab]  # no temp files left behind


def test_encode_adds_cls_sep_and_segments(tmp_path: Path) -> None:
    tok = load_tokenizer(train_vocab(TEXTS, tmp_path), lowercase=True)
    ids, types = tok.encode("Cats  and dogs", "joke")
    cls, sep = tok.token_id("[CLS]"), tok.token_id("[SEP]")
    assert ids[0] == cls and ids.count(sep) == 2 and ids[-1] == sep
    first_sep = ids.index(sep)
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}
    assert tok.encode("cats and dogs")[0] == tok.encode("  cats\tand   dogs ")[0]


def test_truncation(tmp_path: Path) -> None:
    tok = load_tokenizer(train_vocab(TEXTS, tmp_path), lowercase=True, max_len=6)
    ids, _ = tok.encode(" ".join(TEXTS))
    assert len(ids) == 6 and ids[-1] == tok.token_id("[SEP]")


def test_bert_style_vocab_file_cased(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, "Cat", "cat", "##s", "the"]) + "\n")
    cased = load_tokenizer(vocab, lowercase=False)
    assert cased.encode("Cats")[0][1:3] == [5, 7]
    assert cased.encode("cats")[0][1:3] == [6, 7]


def test_missing_and_bad_vocab(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match=r"vocab\.txt"):
        load_tokenizer(tmp_path / "vocab.txt", lowercase=True)
    bad = tmp_path / "bad.txt"
    bad.write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(HmDataError, match=r"bad\.txt:1: .*expected \[PAD\]"):
        load_tokenizer(bad, lowercase=True)
    bad.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    with pytest.raises(HmDataError, match=r"lacks the special token \[MASK\]"):
        load_tokenizer(bad, lowercase=True)


def test_pad_ids() -> None:
    ids, mask = pad_ids([[2, 5, 3], [2, 3]])
    assert ids.tolist() == [[2, 5, 3], [2, 3, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_trained_vocab_is_the_same_in_every_process(tmp_path: Path) -> None:
    # Ties in word counts (every word of TEXTS repeats 5 or 10 times) are broken by name, not
    # by hash order: another interpreter (another hash seed) writes the same file.
    import subprocess
    import sys

    here = train_vocab(TEXTS, tmp_path / "here", vocab_size=60).read_text()
    code = (
        "import sys; from pathlib import Path; from hm_torch.tokenization import train_vocab; "
        f"train_vocab({TEXTS!r}, Path(sys.argv[1]), vocab_size=60)"
    )
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], env=env, check=True)
        assert (tmp_path / seed / "vocab.txt").read_text() == here
    tok = load_tokenizer(tmp_path / "here" / "vocab.txt", lowercase=True)
    assert tok.token_id("[UNK]") not in tok.encode("cats and the joke")[0]  # spelled, not unknown


# Characters BERT's BasicTokenizer._clean_text deletes before word-piecing (category C:
# control, format, unassigned, private use; and U+FFFD). vilio's tokenizers (its transformers
# 3.0.2 copy and ERNIE-ViL's preprocess/tokenization.py) have that same rule; so do ours
# (HF tokenizers' BertNormalizer, clean_text): a word with one inside is the word without it.
DELETED = {"zero-width space": "\u200b", "zero-width joiner": "\u200d", "bell": "\x07",
           "replacement": "\ufffd", "nul": "\x00", "private use": "\ue000"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DELETED))
@pytest.mark.parametrize("lowercase", [True, False])
def test_deleted_characters_inside_a_word_as_upstream(
    tmp_path: Path, name: str, lowercase: bool
) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, "hate", "you", "Hate"]) + "\n")
    tok = load_tokenizer(vocab, lowercase=lowercase)
    char = DELETED[name]
    assert tok.encode(f"ha{char}te you")[0] == tok.encode("hate you")[0]


def test_a_variation_selector_is_stripped_uncased_and_unknown_cased(tmp_path: Path) -> None:
    # U+FE0F (emoji presentation) is a combining mark: uncased BERT strips it with the accents,
    # cased BERT keeps it and the word is not in the vocabulary: [UNK], as upstream's U
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, "love", "you"]) + "\n")
    unk = SPECIAL_TOKENS.index("[UNK]")
    uncased = load_tokenizer(vocab, lowercase=True).encode("love\ufe0f you")[0]
    cased = load_tokenizer(vocab, lowercase=False).encode("love\ufe0f you")[0]
    assert uncased == load_tokenizer(vocab, lowercase=True).encode("love you")[0]
    assert cased[1] == unk and uncased[1] != unk
