"""Smoke-profile word-piece vocabularies that are the same in every process.

HF's WordPiece trainer breaks frequency ties in hash order, which changes between processes, so
two runs of one smoke stage (host venv, container) would get different token ids. Both the torch
and the paddle environment build their smoke vocabularies here instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence


def by_count(counts: Mapping[str, int]) -> list[str]:
    """Keys by falling count, ties by name.

    >>> by_count({"b": 2, "a": 2, "c": 5})
    ['c', 'a', 'b']
    """
    return sorted(counts, key=lambda key: (-counts[key], key))


def smoke_vocab(
    words: Mapping[str, int], vocab_size: int, special_tokens: Sequence[str]
) -> list[str]:
    """Tokens in id order: the special tokens, the most frequent characters alone and as `##`
    continuations (so every word can be spelled), then the most frequent whole words.

    `words` counts the normalised, pre-tokenised words of the training texts.

    >>> smoke_vocab({"ab": 3, "b": 1}, 8, ["[PAD]"])
    ['[PAD]', 'b', 'a', '##b', '##a', 'ab']
    """
    chars: Counter[str] = Counter()
    for word, count in words.items():
        for char in word:
            chars[char] += count
    alphabet = by_count(chars)[: max(vocab_size // 3, 20)]
    tokens = [*special_tokens, *alphabet, *(f"##{c}" for c in alphabet)]
    known = set(tokens)
    whole = [w for w in by_count(words) if len(w) > 1 and w not in known]
    return tokens + whole[: max(vocab_size - len(tokens), 0)]


__all__ = ["by_count", "smoke_vocab"]
