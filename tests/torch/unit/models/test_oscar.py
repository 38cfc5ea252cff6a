"""OSCAR: shapes for both input widths and both heads, object tags, zero-region BERT parity."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.testing import assert_close

from hm_torch.checkpoints import CheckpointFormat, apply_state_dict, bert_pairs
from hm_torch.models.oscar import OscarConfig, OscarForHatefulMemes, OscarForPretraining


def _batch(cfg: OscarConfig, b: int = 3, t: int = 7, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    text_mask = torch.ones(b, t)
    text_mask[2, 4:] = 0
    return {
        "input_ids": torch.randint(1, cfg.vocab_size, (b, t), generator=g) * text_mask.long(),
        "text_mask": text_mask,
        "token_type_ids": torch.zeros(b, t, dtype=torch.long),
        "img_feats": torch.randn(b, n, cfg.feature_dim, generator=g),
        "img_pos": torch.rand(b, n, cfg.pos_dim, generator=g),
        "img_mask": torch.ones(b, n),
    }


def test_sizes() -> None:
    assert OscarConfig.large().hidden_size == 1024 and OscarConfig.large().num_hidden_layers == 24
    assert OscarConfig.base().hidden_dropout_prob == 0.3  # vilio's value
    assert OscarConfig().img_feature_dim == 2052
    assert OscarConfig(pos_dim=6).img_feature_dim == 2054


@pytest.mark.parametrize("pos_dim", [4, 6])
def test_head_shapes_for_both_input_widths(pos_dim: int) -> None:
    cfg = OscarConfig.tiny().replace(pos_dim=pos_dim)
    model = OscarForHatefulMemes(cfg).eval()
    assert model.bert.img_embedding.weight.shape == (cfg.hidden_size, 2048 + pos_dim)
    assert model(_batch(cfg)).shape == (3, 2)


def test_pretraining_heads_shapes_and_tied_decoder() -> None:
    cfg = OscarConfig.tiny()
    model = OscarForPretraining(cfg).eval()
    words, match = model(_batch(cfg))
    assert words.shape == (3, 7, cfg.vocab_size)
    assert match.shape == (3, 2)
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb


def test_image_layernorm_option() -> None:
    cfg = OscarConfig.tiny().replace(use_img_layernorm=True)
    model = OscarForHatefulMemes(cfg).eval()
    assert "bert.LayerNorm.weight" in model.state_dict()
    assert model(_batch(cfg)).shape == (3, 2)


def test_object_tag_segment_changes_the_output() -> None:
    cfg = OscarConfig.tiny()
    model = OscarForHatefulMemes(cfg).eval()
    batch = _batch(cfg)
    tagged = dict(batch, token_type_ids=torch.tensor([[0, 0, 0, 0, 1, 1, 1]] * 3))
    assert (model(batch) - model(tagged)).abs().max() > 1e-4


def test_zero_regions_equal_transformers_bert() -> None:
    torch.manual_seed(0)
    cfg = OscarConfig.tiny()
    hf_cfg = transformers.BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
    )
    bert = transformers.BertModel(hf_cfg).eval()
    with torch.no_grad():
        for p in bert.parameters():
            p.normal_(0, 0.2)
    model = OscarForHatefulMemes(cfg).eval()
    fmt = CheckpointFormat(
        "bert",
        bert_pairs("", "bert.", cfg.num_hidden_layers),
        allow_missing={"bert.img_embedding.*": "not in BERT", "classifier.*": "head"},
    )
    assert apply_state_dict(model, bert.state_dict(), fmt, "bert").ok

    batch = _batch(cfg, n=0)
    out = model.bert(**batch)
    ref = bert(
        input_ids=batch["input_ids"],
        attention_mask=batch["text_mask"],
        token_type_ids=batch["token_type_ids"],
    )
    assert_close(out.sequence, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert_close(out.pooled, ref.pooler_output, rtol=1e-5, atol=1e-5)
