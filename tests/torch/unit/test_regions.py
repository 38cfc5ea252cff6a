"""Region datasets: box position encodings per model, items from a real feature store, padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from hm_shared.dataset import Meme
from hm_shared.errors import HmDataError
from hm_shared.features import FeatureStore, FeatureStoreWriter, RegionFeatures
from hm_torch.regions import POSITION_DIMS, RegionDataset, box_positions, collate_regions
from hm_torch.tokenization import TextTokenizer, load_tokenizer, train_vocab

DIM = 8


def _item(image_id: str, n: int, w: int = 200, h: int = 100) -> RegionFeatures:
    rng = np.random.default_rng(int(image_id))
    x1 = rng.uniform(0, w / 2, n)
    y1 = rng.uniform(0, h / 2, n)
    boxes = np.stack([x1, y1, x1 + w / 4, y1 + h / 4], axis=1).astype(np.float32)
    return RegionFeatures(
        image_id,
        h,
        w,
        boxes,
        rng.normal(size=(n, DIM)).astype(np.float32),
        np.arange(n, dtype=np.int64),
        np.ones(n, np.float32),
        np.zeros(n, np.int64),
        np.zeros(n, np.float32),
    )


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    with FeatureStoreWriter(tmp_path / "store", feature_dim=DIM) as writer:
        writer.add(_item("01234", 6))
        writer.add(_item("05678", 3))
        writer.add(_item("09999", 0))
    return FeatureStore(tmp_path / "store")


@pytest.fixture
def tokenizer(tmp_path: Path) -> TextTokenizer:
    texts = ["a cat on a mat", "dogs are here", "object0 object1 object2"]
    return load_tokenizer(train_vocab(texts * 3, tmp_path / "vocab"), lowercase=True)


MEMES = [
    Meme("01234", "img/01234.png", "a cat on a mat", 1),
    Meme("05678", "img/05678.png", "dogs are here", 0),
    Meme("09999", "img/09999.png", "no regions", None),
]


def test_position_encodings_by_hand() -> None:
    box = np.array([[20, 10, 120, 60]], dtype=np.float32)  # in a 200 x 100 image
    item = RegionFeatures(
        "00001",
        100,
        200,
        box,
        np.zeros((1, 2), np.float32),
        np.zeros(1, np.int64),
        np.zeros(1, np.float32),
        np.zeros(1, np.int64),
        np.zeros(1, np.float32),
    )
    corners = [0.1, 0.1, 0.6, 0.6]
    assert_close(box_positions(item, "xyxy4"), np.array([corners], np.float32))
    assert_close(box_positions(item, "xyxywh6"), np.array([[*corners, 0.5, 0.5]], np.float32))
    assert_close(box_positions(item, "uniter7"), np.array([[*corners, 0.5, 0.5, 0.25]], np.float32))
    assert box_positions(item, "none").shape == (1, 0)


def test_box_outside_the_image_is_an_error() -> None:
    item = _item("00002", 2)
    bad = RegionFeatures(
        item.image_id,
        item.image_h,
        item.image_w,
        item.boxes * 3,
        item.features,
        item.object_ids,
        item.object_conf,
        item.attr_ids,
        item.attr_conf,
    )
    with pytest.raises(HmDataError, match=r"vgattr5050: image 00002: boxes reach"):
        box_positions(bad, "uniter7", "vgattr5050")


@pytest.mark.parametrize("kind", ["uniter7", "xyxy4", "xyxywh6", "none"])
def test_items_and_batch_shapes(store: FeatureStore, tokenizer: TextTokenizer, kind: str) -> None:
    dataset = RegionDataset(MEMES, store, tokenizer, kind, max_regions=4)
    assert dataset.ids() == ["01234", "05678", "09999"]
    assert dataset.labels().tolist() == [1, 0, -1]
    batch = collate_regions([dataset[i] for i in range(3)])
    p = POSITION_DIMS[kind]
    assert batch["img_feats"].shape == (3, 4, DIM)  # 6 boxes cut to max_regions 4
    assert batch["img_pos"].shape == (3, 4, p)
    assert batch["img_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert batch["label"].tolist() == [1, 0, -1]
    assert batch["input_ids"].shape == batch["text_mask"].shape == batch["token_type_ids"].shape
    assert_close(batch["img_feats"][0], torch.from_numpy(np.array(store["01234"].features[:4])))
    assert (batch["img_feats"][1, 3] == 0).all() and batch["ids"] == dataset.ids()


def test_object_tags_form_segment_one(store: FeatureStore, tokenizer: TextTokenizer) -> None:
    names = [f"object{i}" for i in range(1600)]
    item = RegionDataset(MEMES[:1], store, tokenizer, "xyxy4", 3, tag_names=names)[0]
    plain = RegionDataset(MEMES[:1], store, tokenizer, "xyxy4", 3)[0]
    assert item["input_ids"][: len(plain["input_ids"])] == plain["input_ids"]
    assert set(item["token_type_ids"][len(plain["input_ids"]) :]) == {1}


def test_text_only_ablation_has_no_regions(store: FeatureStore, tokenizer: TextTokenizer) -> None:
    dataset = RegionDataset(MEMES, store, tokenizer, "uniter7", drop_regions=True)
    batch = collate_regions([dataset[0], dataset[1]])
    assert batch["img_feats"].shape == (2, 0, DIM) and batch["img_pos"].shape == (2, 0, 7)


def test_meme_without_features_is_named(store: FeatureStore, tokenizer: TextTokenizer) -> None:
    memes = [*MEMES, Meme("04242", "img/04242.png", "absent", 0)]
    with pytest.raises(HmDataError, match=r"features/vg5050: 1 meme\(s\) .*04242"):
        RegionDataset(memes, store, tokenizer, "xyxy4", store_name="features/vg5050")
