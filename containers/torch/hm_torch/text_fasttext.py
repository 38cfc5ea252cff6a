"""fastText sentence vectors for the baseline B, trained unsupervised (skip-gram with character
n-grams) on the training texts, as the DrivenData benchmark.

The model is gensim's fastText implementation, not the fastText wheel: with one thread and a
fixed seed the wheel still gives different vectors from run to run (0.01 to 1.3 apart on a
60-meme corpus, measured here) and now and then stops with "Encountered NaN", while gensim with
one worker is bit-reproducible across processes. The stage still keeps the vectors of all its
texts beside the checkpoint (`save_vectors`), so a resumed stage never trains them again.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gensim.models import FastText

from hm_shared.errors import HmDataError
from hm_shared.io import atomic_open


def normalise_text(text: str) -> str:
    return " ".join(text.split()).lower()


class SentenceVectors:
    """text → float32[dim]: the mean of the L2-normalised word vectors (fastText's own
    `get_sentence_vector` of an unsupervised model); out-of-vocabulary words are built from
    their character n-grams."""

    def __init__(self, model: FastText) -> None:
        self.model = model
        self.dim = model.wv.vector_size

    def __call__(self, text: str) -> np.ndarray:
        total = np.zeros(self.dim, dtype=np.float64)
        words = normalise_text(text).split()
        for word in words:
            vector = self.model.wv[word].astype(np.float64)
            norm = np.linalg.norm(vector)
            if norm > 0:
                total += vector / norm
        return (total / max(len(words), 1)).astype(np.float32)


def train_sentence_vectors(
    texts: Sequence[str],
    *,
    dim: int = 300,
    epoch: int = 5,
    min_count: int = 1,
    bucket: int = 2_000_000,
    algorithm: str = "skipgram",
    seed: int = 0,
) -> SentenceVectors:
    """fastText's unsupervised defaults (window 5, 5 negatives, n-grams of 3–6 characters,
    lr 0.05), one worker thread so that the result depends only on `seed`."""
    if algorithm not in ("skipgram", "cbow"):
        raise ValueError(f"fastText algorithm must be skipgram or cbow, got {algorithm!r}")
    model = FastText(
        sentences=[normalise_text(t).split() for t in texts],
        vector_size=dim,
        sg=int(algorithm == "skipgram"),
        window=5,
        negative=5,
        min_n=3,
        max_n=6,
        alpha=0.05,
        epochs=epoch,
        min_count=min_count,
        bucket=bucket,
        workers=1,
        seed=seed,
    )
    return SentenceVectors(model)


def save_vectors(path: Path, vectors: dict[str, np.ndarray]) -> None:
    """text → vector table, written atomically (npz: `texts` str[n], `vectors` float32[n, d])."""
    texts = sorted(vectors)
    with atomic_open(path, "wb") as handle:
        np.savez(
            handle, texts=np.array(texts, dtype=str), vectors=np.stack([vectors[t] for t in texts])
        )


def load_vectors(path: Path) -> dict[str, np.ndarray]:
    """The table `save_vectors` wrote. Pickled (object) arrays are never loaded: the file sits in
    a writable attempt dir, and unpickling runs code."""
    try:
        with np.load(path, allow_pickle=False) as table:
            texts, vectors = table["texts"], table["vectors"]
            if texts.dtype.kind != "U" or vectors.dtype != np.float32 or vectors.ndim != 2:
                raise ValueError(f"texts {texts.dtype}, vectors {vectors.dtype} {vectors.shape}")
            return dict(zip(texts.tolist(), vectors, strict=True))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise HmDataError(
            f"not a text-vector table ({exc}); expected an npz of texts str[n] and vectors "
            "float32[n, d]: delete it and the stage trains the vectors again",
            path,
        ) from None


__all__ = [
    "SentenceVectors",
    "load_vectors",
    "normalise_text",
    "save_vectors",
    "train_sentence_vectors",
]
