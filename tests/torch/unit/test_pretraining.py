"""Pre-training corruption: MLM 15 % with 80/10/10, ITM swaps, region masking, the loss."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from hm_torch.models.oscar import OscarConfig, OscarForPretraining
from hm_torch.pretraining import (
    IGNORE,
    corrupt_batch,
    mask_regions,
    mask_tokens,
    pretraining_loss,
    swap_texts,
)

SPECIAL = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _ids(b: int, t: int, vocab: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones(b, t)
    ids[0, -5:], mask[0, -5:] = 0, 0  # padding
    return ids, mask


def test_mask_tokens_rates_and_specials() -> None:
    ids, mask = _ids(400, 50)
    corrupted, labels = mask_tokens(ids, mask, SPECIAL, 4, 1000, torch.Generator().manual_seed(0))
    chosen = labels != IGNORE
    candidates = mask.bool() & (ids > 4)
    assert not (chosen & ~candidates).any()  # never specials or padding
    assert_close(labels[chosen], ids[chosen])
    rate = chosen.sum() / candidates.sum()
    assert 0.14 < rate < 0.16
    masked = (corrupted == 4) & chosen
    kept = (corrupted == ids) & chosen
    assert 0.77 < masked.sum() / chosen.sum() < 0.83
    assert 0.07 < kept.sum() / chosen.sum() < 0.13  # 10 % kept (+ random draws of the same id)
    assert (corrupted[~chosen] == ids[~chosen]).all()


def test_swap_texts_half_and_labels_consistent() -> None:
    b = 1000
    batch = {
        "input_ids": torch.arange(b)[:, None].repeat(1, 3),
        "token_type_ids": torch.zeros(b, 3, dtype=torch.long),
        "text_mask": torch.ones(b, 3),
        "img_feats": torch.arange(b, dtype=torch.float)[:, None, None],
    }
    out, labels = swap_texts(batch, torch.Generator().manual_seed(0))
    matched = out["input_ids"][:, 0] == torch.arange(b)
    assert (matched == labels.bool()).all()
    assert 0.45 < 1 - labels.float().mean() < 0.55
    assert_close(out["img_feats"], batch["img_feats"])  # images stay, texts move


def test_swap_needs_two_examples() -> None:
    batch = {
        "input_ids": torch.ones(1, 2, dtype=torch.long),
        "token_type_ids": torch.zeros(1, 2),
        "text_mask": torch.ones(1, 2),
    }
    _, labels = swap_texts(batch, torch.Generator().manual_seed(0), rate=1.0)
    assert labels.tolist() == [1]


def test_mask_regions_80_10_10_on_real_regions_only() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.rand(400, 10, 4, generator=g) + 1.0  # no real feature is zero
    mask = torch.ones(400, 10)
    mask[:, 8:] = 0
    feats[:, 8:] = 7.0  # padding regions: never a replacement source
    out = mask_regions(feats, mask, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(-1)
    changed = (out != feats).any(-1) & ~zeroed
    assert not (zeroed | changed)[:, 8:].any()  # padding untouched
    real = 400 * 8
    assert 0.15 * 0.8 * 0.85 < zeroed.sum() / real < 0.15 * 0.8 * 1.15
    assert 0.15 * 0.1 * 0.6 < changed.sum() / real < 0.15 * 0.1 * 1.4
    # a replaced region holds the exact feature of some real region of the batch
    pool = feats[:, :8].reshape(-1, 4)
    for row in out[changed]:
        assert (pool == row).all(-1).any()


def test_loss_decreases_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    cfg = OscarConfig.tiny().replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = OscarForPretraining(cfg)
    ids, mask = _ids(8, 10, vocab=cfg.vocab_size)
    batch = {
        "input_ids": ids,
        "text_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "img_feats": torch.randn(8, 4, 2048),
        "img_pos": torch.rand(8, 4, 4),
        "img_mask": torch.ones(8, 4),
    }
    g = torch.Generator().manual_seed(0)
    fixed = corrupt_batch(
        batch,
        special_ids=SPECIAL,
        mask_id=4,
        vocab_size=cfg.vocab_size,
        generator=g,
        itm=True,
        word_rate=0.5,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first, parts = pretraining_loss(model, fixed)
    assert set(parts) == {"mlm", "itm"}
    for _ in range(60):
        loss, _ = pretraining_loss(model, fixed)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * float(first.detach())
