"""UNITER: shapes, zero-region parity with transformers' BertModel, padding invariance."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.testing import assert_close

from hm_torch.checkpoints import CheckpointFormat, apply_state_dict, bert_pairs
from hm_torch.models.uniter import UniterConfig, UniterForHatefulMemes


def _batch(cfg: UniterConfig, b: int = 3, t: int = 7, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text_mask = torch.ones(b, t)
    text_mask[0, 5:] = 0
    img_mask = torch.ones(b, n)
    img_mask[1, 3:] = 0
    return {
        "input_ids": torch.randint(1, cfg.vocab_size, (b, t), generator=g) * text_mask.long(),
        "text_mask": text_mask,
        "img_feats": torch.randn(b, n, cfg.img_dim, generator=g),
        "img_pos": torch.rand(b, n, cfg.pos_dim, generator=g),
        "img_mask": img_mask,
    }


def test_tiny_config_follows_style_bounds() -> None:
    cfg = UniterConfig.tiny()
    assert cfg.hidden_size <= 40 and cfg.num_hidden_layers == 2 and cfg.vocab_size <= 100


def test_large_and_base_sizes() -> None:
    assert (UniterConfig.large().hidden_size, UniterConfig.large().num_hidden_layers) == (1024, 24)
    assert (UniterConfig.base().hidden_size, UniterConfig.base().num_hidden_layers) == (768, 12)
    assert UniterConfig.base().vocab_size == 28996


def test_head_shape_and_backbone_shapes() -> None:
    cfg = UniterConfig.tiny()
    model = UniterForHatefulMemes(cfg).eval()
    batch = _batch(cfg)
    assert model(batch).shape == (3, 2)
    out = model.uniter(**batch)
    assert out.sequence.shape == (3, 7 + 5, cfg.hidden_size)
    assert out.pooled.shape == (3, cfg.hidden_size)
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1


def test_padded_regions_do_not_change_the_output() -> None:
    cfg = UniterConfig.tiny()
    model = UniterForHatefulMemes(cfg).eval()
    batch = _batch(cfg)
    padded = dict(batch)
    pad = 4  # extra padded regions with junk features must be invisible
    padded["img_feats"] = torch.cat([batch["img_feats"], 100 * torch.randn(3, pad, cfg.img_dim)], 1)
    padded["img_pos"] = torch.cat([batch["img_pos"], torch.rand(3, pad, cfg.pos_dim)], 1)
    padded["img_mask"] = torch.cat([batch["img_mask"], torch.zeros(3, pad)], 1)
    assert_close(model(padded), model(batch), rtol=1e-5, atol=1e-5)


def test_regions_change_the_output() -> None:
    cfg = UniterConfig.tiny()
    model = UniterForHatefulMemes(cfg).eval()
    batch = _batch(cfg)
    other = dict(batch, img_feats=torch.randn_like(batch["img_feats"]))
    assert (model(batch) - model(other)).abs().max() > 1e-4


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_zero_regions_equal_transformers_bert(attn: str) -> None:
    torch.manual_seed(0)
    cfg = UniterConfig.tiny().replace(attn_implementation=attn)
    hf_cfg = transformers.BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        attn_implementation="eager",
    )
    bert = transformers.BertModel(hf_cfg).eval()
    with torch.no_grad():
        for p in bert.parameters():
            p.normal_(0, 0.2)  # far from the LayerNorm identity init, so every weight matters
    model = UniterForHatefulMemes(cfg).eval()
    fmt = CheckpointFormat(
        "bert",
        bert_pairs("", "uniter.", cfg.num_hidden_layers),
        allow_missing={"uniter.img_embeddings.*": "not in BERT", "classifier.*": "head"},
    )
    report = apply_state_dict(model, bert.state_dict(), fmt, "bert")
    assert report.ok, report.describe()

    batch = _batch(cfg, n=0)
    out = model.uniter(**batch)
    ref = bert(input_ids=batch["input_ids"], attention_mask=batch["text_mask"])
    assert_close(out.sequence, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert_close(out.pooled, ref.pooler_output, rtol=1e-5, atol=1e-5)
