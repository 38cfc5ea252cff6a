"""Shared BERT blocks: SDPA equals the explicit attention, masks, head layout, config I/O."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from hm_shared.errors import HmDataError
from hm_torch.models.layers import (
    BertEncoder,
    BertSelfAttention,
    BertSettings,
    classifier_head,
    extended_attention_mask,
)

TINY = BertSettings(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
)


def test_sdpa_equals_eager_forward_and_backward() -> None:
    torch.manual_seed(0)
    sdpa = BertEncoder(TINY.replace(attn_implementation="sdpa")).eval()
    eager = BertEncoder(TINY.replace(attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    hidden = torch.randn(3, 9, 32, requires_grad=True)
    mask = torch.ones(3, 9)
    mask[0, 6:] = 0
    additive = extended_attention_mask(mask, hidden.dtype)
    out_sdpa = sdpa(hidden, additive)[-1]
    out_eager = eager(hidden, additive)[-1]
    assert_close(out_sdpa, out_eager, rtol=1e-5, atol=1e-5)
    (grad_sdpa,) = torch.autograd.grad(out_sdpa[mask.bool()].sum(), hidden)
    (grad_eager,) = torch.autograd.grad(out_eager[mask.bool()].sum(), hidden)
    assert_close(grad_sdpa, grad_eager, rtol=1e-4, atol=1e-5)


def test_masked_keys_are_invisible() -> None:
    torch.manual_seed(0)
    attention = BertSelfAttention(TINY).eval()
    hidden = torch.randn(1, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.float)
    changed = hidden.clone()
    changed[:, 4:] = 1000.0
    additive = extended_attention_mask(mask, hidden.dtype)
    assert_close(attention(hidden, additive)[:, :4], attention(changed, additive)[:, :4])


def test_encoder_returns_every_state() -> None:
    states = BertEncoder(TINY)(torch.randn(2, 5, 32), None)
    assert len(states) == 3 and all(s.shape == (2, 5, 32) for s in states)


def test_extended_mask_values_and_shape() -> None:
    additive = extended_attention_mask(torch.tensor([[1.0, 0.0]]), torch.float32)
    assert additive.shape == (1, 1, 1, 2)
    assert additive[0, 0, 0, 0] == 0 and additive[0, 0, 0, 1] == torch.finfo(torch.float32).min


def test_classifier_head_layout() -> None:
    head = classifier_head(8)
    assert sorted(head.state_dict()) == [
        "0.bias",
        "0.weight",
        "2.bias",
        "2.weight",
        "3.bias",
        "3.weight",
    ]
    assert head[2].eps == 1e-12 and head(torch.randn(4, 8)).shape == (4, 2)


def test_heads_must_divide_hidden() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        BertSelfAttention(TINY.replace(num_attention_heads=5))


def test_config_round_trip_and_unknown_field() -> None:
    assert BertSettings.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(
        HmDataError, match=r"run/config\.json: unknown BertSettings field\(s\) \['hiden'\]"
    ):
        BertSettings.from_dict({"hiden": 3}, "run/config.json")
