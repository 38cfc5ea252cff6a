"""U, O and V under bf16 autocast, as the engine trains them on a GPU (`engine._autocast`).

No GPU here: CPU autocast runs the same model code with bf16 matmuls, which is what breaks when
a mask or an embedding has the wrong dtype for the fused attention. Checked: the forward and
backward pass run, logits and gradients are finite, and the logits stay within bf16 rounding of
the fp32 ones, padded regions included.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from hm_torch.models.oscar import OscarConfig, OscarForHatefulMemes
from hm_torch.models.uniter import UniterConfig, UniterForHatefulMemes
from hm_torch.models.visualbert import VisualBertConfig, VisualBertForHatefulMemes


def _batch(vocab: int, feature_dim: int, pos_dim: int | None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    b, t, n = 4, 9, 6
    text_mask = torch.ones(b, t)
    text_mask[0, 6:] = 0
    img_mask = torch.ones(b, n)
    img_mask[1, 2:] = 0
    batch = {
        "input_ids": torch.randint(1, vocab, (b, t), generator=g) * text_mask.long(),
        "text_mask": text_mask,
        "img_feats": torch.randn(b, n, feature_dim, generator=g),
        "img_mask": img_mask,
    }
    if pos_dim is not None:
        batch["img_pos"] = torch.rand(b, n, pos_dim, generator=g)
    return batch


def _uniter() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = UniterConfig.tiny()
    return UniterForHatefulMemes(cfg), _batch(cfg.vocab_size, cfg.img_dim, cfg.pos_dim)


def _oscar() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = OscarConfig.tiny()
    return OscarForHatefulMemes(cfg), _batch(cfg.vocab_size, cfg.feature_dim, cfg.pos_dim)


def _visualbert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    cfg = VisualBertConfig.tiny()
    return VisualBertForHatefulMemes(cfg), _batch(cfg.vocab_size, cfg.visual_embedding_dim, None)


@pytest.mark.parametrize("build", [_uniter, _oscar, _visualbert], ids=["U", "O", "V"])
def test_bf16_autocast_forward_and_backward(
    build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]],
) -> None:
    torch.manual_seed(0)
    model, batch = build()
    model.eval()  # no dropout: the two passes must see the same network
    reference = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)
        loss = nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert logits.dtype == torch.bfloat16  # the head's matmul ran in bf16: autocast was active
    assert torch.isfinite(logits.float()).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # bf16 keeps 8 bits of mantissa: a few 1e-2 after a tiny 2-layer encoder
    assert_close(logits.float(), reference, rtol=0.05, atol=0.05)
