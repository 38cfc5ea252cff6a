"""Model inputs as vilio's ERNIE-ViL reader builds them: region tokens, 5-d positions, word pieces.

Image side (reference/models.md §6, "Image input"): each box set gets a global token (mean
feature, position [0, 0, 1, 1, 1]); with a second ("extra", 10–100-box) set, the main set's
global token becomes the box-count-weighted mean of both global tokens, followed by the first
D − 1 main boxes and the first G extra boxes, G = min(max − 1, N_extra), D = min(max − G,
N_main + 1), at most `max_regions` (100) tokens.
Text side: `[CLS] word pieces [SEP]`, segment 0, positions 0..L−1, padded with id 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import BertWordPieceTokenizer

from hm_shared.errors import HmDataError
from hm_shared.features import FeatureStore, RegionFeatures
from hm_shared.vocab import smoke_vocab

GLOBAL_POSITION = np.array([0.0, 0.0, 1.0, 1.0, 1.0], dtype=np.float32)
MAX_REGIONS = 100
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def open_store(root: Path) -> Mapping[str, RegionFeatures]:
    """The region features of one variant, by image id (the only place a store is opened)."""
    return FeatureStore(Path(root))


def box_positions(boxes: np.ndarray, image_h: int, image_w: int) -> np.ndarray:
    """(N, 5) float32: x1/w, y1/h, x2/w, y2/h, box area / image area, from (N, 4) pixel boxes."""
    boxes = np.asarray(boxes, dtype=np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / float(image_h * image_w)
    scale = np.array([image_w, image_h, image_w, image_h], dtype=np.float32)
    return np.concatenate([boxes / scale, area[:, None]], axis=1).astype(np.float32)


def image_tokens(
    main: RegionFeatures, extra: RegionFeatures | None = None, max_regions: int = MAX_REGIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Region tokens (R, D) and positions (R, 5) of one image, R ≤ `max_regions`, token 0 global."""
    n_main = main.num_boxes
    feats = np.asarray(main.features, dtype=np.float32)
    glob = feats.mean(axis=0) if n_main else np.zeros(feats.shape[1], np.float32)
    pos = box_positions(main.boxes, main.image_h, main.image_w)
    if extra is None:
        keep = min(n_main, max_regions - 1)
        return (
            np.concatenate([glob[None], feats[:keep]]),
            np.concatenate([GLOBAL_POSITION[None], pos[:keep]]),
        )
    n_extra = extra.num_boxes
    extra_feats = np.asarray(extra.features, dtype=np.float32)
    if extra_feats.shape[1] != feats.shape[1]:
        raise HmDataError(
            f"image {main.image_id}: feature sizes differ between the two box "
            f"sets ({feats.shape[1]} vs {extra_feats.shape[1]})"
        )
    extra_glob = extra_feats.mean(axis=0) if n_extra else np.zeros_like(glob)
    # Upstream weights each global token by its set's token count (boxes + the global token).
    glob = (glob * (n_main + 1) + extra_glob * (n_extra + 1)) / (n_main + n_extra + 2)
    g = min(max_regions - 1, n_extra)
    d = min(max_regions - g, n_main + 1)
    extra_pos = box_positions(extra.boxes, extra.image_h, extra.image_w)
    tokens = np.concatenate([glob[None], feats[: d - 1], extra_feats[:g]])
    positions = np.concatenate([GLOBAL_POSITION[None], pos[: d - 1], extra_pos[:g]])
    return tokens.astype(np.float32), positions.astype(np.float32)


class ErnieTokenizer:
    """Lower-cased BERT word pieces over the ERNIE vocabulary (vocab.txt, [PAD] = 0)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        missing = [t for t in SPECIAL_TOKENS[:4] if t not in vocab]
        if missing:
            raise HmDataError(f"vocabulary lacks the special tokens {missing}")
        if vocab["[PAD]"] != 0:
            raise HmDataError(f"[PAD] has id {vocab['[PAD]']}; ERNIE-ViL pads with id 0")
        self.vocab = vocab
        self._wp = BertWordPieceTokenizer(vocab, lowercase=True)
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]

    @classmethod
    def from_file(cls, path: Path) -> ErnieTokenizer:
        """vocab.txt: one token a line, the line number its id."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise HmDataError(
                f"cannot read the vocabulary: {exc.strerror}; expected vocab.txt "
                "of the ERNIE-ViL tarball beside params/",
                path,
            ) from exc
        return cls({token: i for i, token in enumerate(lines)})

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> ErnieTokenizer:
        """A small word-piece vocabulary built from `texts` (smoke profile: no download), the
        same in every process (`hm_shared.vocab`; HF's trainer breaks ties in hash order)."""
        bert = BertWordPieceTokenizer(lowercase=True)  # its normaliser and pre-tokeniser
        words: Counter[str] = Counter()
        for text in texts:
            normal = bert.normalizer.normalize_str(text)
            words.update(word for word, _ in bert.pre_tokenizer.pre_tokenize_str(normal))
        tokens = smoke_vocab(words, vocab_size, SPECIAL_TOKENS)
        return cls({token: index for index, token in enumerate(tokens)})

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def vocab_text(self) -> str:
        return "".join(t + "\n" for t, _ in sorted(self.vocab.items(), key=lambda kv: kv[1]))

    def encode(self, text: str, max_len: int) -> list[int]:
        """`[CLS] pieces [SEP]` ids, the pieces cut so the whole is at most `max_len` long."""
        pieces = self._wp.encode(text, add_special_tokens=False).ids[: max_len - 2]
        return [self.cls_id, *pieces, self.sep_id]


@dataclass(frozen=True)
class Batch:
    """Padded numpy arrays of one batch (see `ErnieVilModel.forward` for shapes)."""

    ids: list[str]
    input_ids: np.ndarray  # (B, T) int64
    text_mask: np.ndarray  # (B, T) float32
    image_feats: np.ndarray  # (B, R, D) float32
    image_loc: np.ndarray  # (B, R, 5) float32
    image_mask: np.ndarray  # (B, R) float32
    labels: np.ndarray  # (B,) float32; -1 where unknown


class MemeInputs:
    """Token ids of a split's memes plus lazy access to their region tokens."""

    def __init__(
        self,
        memes: Sequence[tuple[str, str, int | None]],
        tokenizer: ErnieTokenizer,
        main: Mapping[str, RegionFeatures],
        extra: Mapping[str, RegionFeatures] | None,
        max_len: int = 128,
        max_regions: int = MAX_REGIONS,
        source: str = "",
    ) -> None:
        for store, name in ((main, "features"), (extra, "extra_features")):
            if store is None:
                continue
            absent = [m for m, _, _ in memes if m not in store]
            if absent:
                raise HmDataError(
                    f"{len(absent)} meme(s) of {source} have no regions in the {name} store "
                    f"({', '.join(absent[:5])}); expected the extract stage to cover every image",
                    getattr(store, "root", None),
                )
        self.ids = [m for m, _, _ in memes]
        self.labels = np.array([-1 if y is None else y for _, _, y in memes], dtype=np.float32)
        self.tokens = [tokenizer.encode(text, max_len) for _, text, _ in memes]
        self.main, self.extra, self.max_regions = main, extra, max_regions

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: Sequence[int]) -> Batch:
        tokens = [self.tokens[i] for i in index]
        t_len = max(len(t) for t in tokens)
        input_ids = np.zeros((len(index), t_len), np.int64)
        text_mask = np.zeros((len(index), t_len), np.float32)
        regions = []
        for row, i in enumerate(index):
            input_ids[row, : len(tokens[row])] = tokens[row]
            text_mask[row, : len(tokens[row])] = 1.0
            meme = self.ids[i]
            extra = self.extra[meme] if self.extra is not None else None
            regions.append(image_tokens(self.main[meme], extra, self.max_regions))
        r_len, dim = max(f.shape[0] for f, _ in regions), regions[0][0].shape[1]
        feats = np.zeros((len(index), r_len, dim), np.float32)
        loc = np.zeros((len(index), r_len, 5), np.float32)
        mask = np.zeros((len(index), r_len), np.float32)
        for row, (f, p) in enumerate(regions):
            feats[row, : len(f)], loc[row, : len(f)], mask[row, : len(f)] = f, p, 1.0
        return Batch(
            [self.ids[i] for i in index],
            input_ids,
            text_mask,
            feats,
            loc,
            mask,
            self.labels[list(index)],
        )


__all__ = [
    "GLOBAL_POSITION",
    "MAX_REGIONS",
    "Batch",
    "ErnieTokenizer",
    "MemeInputs",
    "box_positions",
    "image_tokens",
    "open_store",
]
