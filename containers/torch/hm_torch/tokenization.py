"""Word-piece tokenisation for U, O, V, X and D with HF `tokenizers`.

Full profile: the BERT vocabulary file named by the recipe (bert-large-cased for U, uncased for
O and V) under `data/weights`. Smoke profile: a small word-piece vocabulary built from the
training texts, saved beside the run's outputs so prediction uses the same ids. `[PAD]` is id 0
in both, which the models' embeddings and the collate functions rely on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import BertWordPieceTokenizer

from hm_shared.errors import HmDataError, MissingWeightsError
from hm_shared.io import atomic_write_text
from hm_shared.vocab import smoke_vocab

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def clean_text(text: str) -> str:
    """Collapse whitespace, as vilio does before tokenising."""
    return " ".join(text.split())


@dataclass
class TextTokenizer:
    """`[CLS] text [SEP]` (+ `pair [SEP]` with segment 1), truncated to `max_len` tokens."""

    tokenizer: BertWordPieceTokenizer
    vocab_file: Path
    max_len: int = 128

    def __post_init__(self) -> None:
        self.tokenizer.enable_truncation(self.max_len)
        self.tokenizer.no_padding()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise HmDataError(f"vocabulary has no {token} token", self.vocab_file)
        return token_id

    @property
    def pad_id(self) -> int:
        return self.token_id("[PAD]")

    @property
    def mask_id(self) -> int:
        return self.token_id("[MASK]")

    @property
    def special_ids(self) -> list[int]:
        return [self.token_id(t) for t in SPECIAL_TOKENS]

    def encode(self, text: str, pair: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids and segment ids (0 for `text`, 1 for `pair`)."""
        encoding = self.tokenizer.encode(clean_text(text), clean_text(pair) if pair else None)
        return encoding.ids, encoding.type_ids


def load_tokenizer(vocab_file: Path, lowercase: bool, max_len: int = 128) -> TextTokenizer:
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise MissingWeightsError(
            "vocabulary file not found; put the BERT vocab.txt named in recipes.toml there "
            "(from the model's Hugging Face repository)",
            vocab_file,
        )
    lines = vocab_file.read_text(encoding="utf-8").splitlines()
    for token in SPECIAL_TOKENS:
        if token not in lines:
            raise HmDataError(f"vocabulary lacks the special token {token}", vocab_file)
    if lines[0] != "[PAD]":
        raise HmDataError(f"line 1 is {lines[0]!r}; expected [PAD] (padding id 0)", vocab_file, 1)
    tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
    return TextTokenizer(tokenizer, vocab_file, max_len)


def train_vocab(
    texts: Iterable[str], out_dir: Path, vocab_size: int = 100, lowercase: bool = True
) -> Path:
    """Build a small word-piece vocabulary (smoke profile) and write `out_dir/vocab.txt`.

    Normalised and pre-tokenised as BERT does, then `hm_shared.vocab.smoke_vocab` (ties broken
    by name: the same ids in a container as on the host).
    """
    bert = BertWordPieceTokenizer(lowercase=lowercase)  # its normaliser and pre-tokeniser
    words: Counter[str] = Counter()
    for text in texts:
        normal = bert.normalizer.normalize_str(clean_text(text))
        words.update(word for word, _ in bert.pre_tokenizer.pre_tokenize_str(normal))
    tokens = smoke_vocab(words, vocab_size, SPECIAL_TOKENS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "vocab.txt"
    atomic_write_text(target, "".join(f"{token}\n" for token in tokens))
    return target


def pad_ids(rows: Sequence[Sequence[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: ids (Tensor[B, T]) and their 1/0 mask (Tensor[B, T], float)."""
    length = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), length)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1.0
    return ids, mask


__all__ = [
    "SPECIAL_TOKENS",
    "TextTokenizer",
    "clean_text",
    "load_tokenizer",
    "pad_ids",
    "train_vocab",
]
