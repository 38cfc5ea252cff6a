"""VisualBERT: parity with transformers.VisualBertModel on the same weights, heads, init."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch.testing import assert_close

from hm_torch.checkpoints import apply_state_dict
from hm_torch.models.visualbert import (
    VisualBertConfig,
    VisualBertForHatefulMemes,
    VisualBertForPretraining,
    layout_format,
)


def _batch(cfg: VisualBertConfig, b: int = 3, t: int = 7, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    text_mask = torch.ones(b, t)
    text_mask[1, 5:] = 0
    img_mask = torch.ones(b, n)
    img_mask[0, 2:] = 0
    return {
        "input_ids": torch.randint(1, cfg.vocab_size, (b, t), generator=g) * text_mask.long(),
        "text_mask": text_mask,
        "img_feats": torch.randn(b, n, cfg.visual_embedding_dim, generator=g),
        "img_mask": img_mask,
    }


def _hf_model(cfg: VisualBertConfig) -> transformers.VisualBertModel:
    hf_cfg = transformers.VisualBertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        visual_embedding_dim=cfg.visual_embedding_dim,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=0,
    )
    model = transformers.VisualBertModel(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_equals_transformers_visualbert(attn: str) -> None:
    torch.manual_seed(0)
    cfg = VisualBertConfig.tiny().replace(attn_implementation=attn)
    ref_model = _hf_model(cfg)
    model = VisualBertForHatefulMemes(cfg).eval()
    state = {f"visual_bert.{k}": v for k, v in ref_model.state_dict().items()}
    report = apply_state_dict(model, state, layout_format(cfg, "hf", with_heads=False), "hf")
    assert report.ok, report.describe()
    heads = {name for name in model.state_dict() if name.startswith("head.")}
    assert {key for key, _ in report.allowed} == heads

    batch = _batch(cfg)
    out = model.visual_bert(
        batch["input_ids"], batch["text_mask"], batch["img_feats"], batch["img_mask"]
    )
    ref = ref_model(
        input_ids=batch["input_ids"],
        attention_mask=batch["text_mask"],
        visual_embeds=batch["img_feats"],
        visual_attention_mask=batch["img_mask"],
        output_hidden_states=True,
    )
    assert_close(out.sequence, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert_close(out.pooled, ref.pooler_output, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_layer_average_head_shape_and_init() -> None:
    cfg = VisualBertConfig.tiny()
    model = VisualBertForHatefulMemes(cfg).eval()
    assert model(_batch(cfg)).shape == (3, 2)
    weights = model.head.layer_weights.detach()
    assert weights.shape == (cfg.num_hidden_layers + 1,)
    assert_close(weights, torch.tensor([-3.0, -3.0, 0.0]))
    assert len(model.head.sample_dropouts) == 5


def test_layer_average_head_is_stochastic_in_training_only() -> None:
    cfg = VisualBertConfig.tiny()
    model = VisualBertForHatefulMemes(cfg)
    batch = _batch(cfg)
    model.eval()
    assert_close(model(batch), model(batch))
    model.train()
    torch.manual_seed(0)
    first = model(batch)
    assert (first - model(batch)).abs().max() > 1e-6


def test_pooled_head_option() -> None:
    cfg = VisualBertConfig.tiny().replace(head="pooled")
    model = VisualBertForHatefulMemes(cfg).eval()
    assert model(_batch(cfg)).shape == (3, 2)
    assert "head.3.weight" in model.state_dict()


def test_special_visual_initialize_copies_text_tables() -> None:
    model = VisualBertForHatefulMemes(VisualBertConfig.tiny())
    emb = model.visual_bert.embeddings
    assert_close(emb.visual_position_embeddings.weight, emb.position_embeddings.weight)
    assert_close(emb.visual_token_type_embeddings.weight, emb.token_type_embeddings.weight)


def test_pretraining_heads_shapes() -> None:
    cfg = VisualBertConfig.tiny()
    words, match = VisualBertForPretraining(cfg).eval()(_batch(cfg))
    assert words.shape == (3, 7, cfg.vocab_size) and match.shape == (3, 2)


def test_layer_average_classifier_starts_as_vilio_reg() -> None:
    # vilio's entryV.py --reg: `self.classifier.apply(self.init_weights)`: N(0, 0.02), bias 0.
    # torch's default would be U(±1/√768) for both: a non-zero bias and no weight beyond 0.036.
    torch.manual_seed(0)
    cfg = VisualBertConfig.base()
    classifier = VisualBertForHatefulMemes(cfg).head.classifier
    assert torch.equal(classifier.bias, torch.zeros(2))
    weight = classifier.weight.detach()
    assert abs(float(weight.std()) - cfg.initializer_range) < 0.002
    assert float(weight.abs().max()) > 1 / cfg.hidden_size**0.5  # a normal's tail, not uniform
