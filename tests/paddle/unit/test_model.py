"""ERNIE-ViL model: configs, shapes, the interleaving, masking, the HM head."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes, ErnieVilModel


def _inputs(b: int = 2, t: int = 7, r: int = 5, d: int = 12) -> list[paddle.Tensor]:
    rng = np.random.default_rng(0)
    text_mask = np.ones((b, t), np.float32)
    text_mask[1, 4:] = 0
    image_mask = np.ones((b, r), np.float32)
    image_mask[0, 3:] = 0
    arrays = [
        rng.integers(1, 50, (b, t)),
        text_mask,
        rng.normal(size=(b, r, d)),
        rng.uniform(size=(b, r, 5)),
        image_mask,
    ]
    return [
        paddle.to_tensor(a.astype(np.int64 if i == 0 else np.float32)) for i, a in enumerate(arrays)
    ]


def test_upstream_sizes() -> None:
    base, large = ErnieVilConfig.base(), ErnieVilConfig.large()
    assert (base.num_hidden_layers, base.num_vision_layers, base.num_co_layers) == (12, 6, 6)
    assert (large.num_hidden_layers, large.intermediate_size, large.v_intermediate_size) == (
        24,
        4096,
        4096,
    )
    assert base.layer_norm_eps == 1e-5
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ErnieVilConfig(num_hidden_layers=10)
    with pytest.raises(ValueError, match="unknown ERNIE-ViL size 'huge'"):
        ErnieVilConfig.named("huge")


def test_layer_norm_epsilon_and_fc_layout() -> None:
    model = ErnieVilModel(ErnieVilConfig.tiny(vocab_size=50, v_feature_size=12))
    assert model.pre_encoder_layer_norm._epsilon == 1e-5
    # fluid fc layout [in, out]: the text-query co-attention maps hidden (32) to co_hidden (40).
    assert model.encoder_colayer[0].multi_head_att.query_fc.weight.shape == [32, 40]
    assert model.encoder_colayer[0].multi_head_att.output_fc.weight.shape == [40, 32]
    assert model.encoder_colayer[0].vl_multi_head_att.key_fc.weight.shape == [32, 40]


def test_head_shapes_and_eval_determinism() -> None:
    paddle.seed(0)
    model = ErnieVilForHatefulMemes(ErnieVilConfig.tiny(vocab_size=50, v_feature_size=12))
    model.eval()
    inputs = _inputs()
    text, image = model.ernie_vil(*inputs)
    assert text.shape == [2, 40] and image.shape == [2, 40]
    assert float(text.min()) >= 0 and float(image.min()) >= 0  # ReLU poolers
    logits = model(*inputs)
    assert logits.shape == [2]
    np.testing.assert_allclose(model(*inputs).numpy(), logits.numpy(), rtol=0, atol=0)


def test_padding_does_not_change_outputs() -> None:
    paddle.seed(0)
    model = ErnieVilForHatefulMemes(ErnieVilConfig.tiny(vocab_size=50, v_feature_size=12))
    model.eval()
    ids, tmask, feats, loc, imask = _inputs()
    full = model(ids, tmask, feats, loc, imask).numpy()
    # Changing padded positions (text of row 1 after 4, regions of row 0 after 3) is invisible.
    ids2 = ids.numpy().copy()
    ids2[1, 4:] = 7
    feats2 = feats.numpy().copy()
    feats2[0, 3:] = 100.0
    again = model(paddle.to_tensor(ids2), tmask, paddle.to_tensor(feats2), loc, imask).numpy()
    np.testing.assert_allclose(again, full, rtol=1e-5, atol=1e-5)


def test_text_only_ablation_ignores_the_image() -> None:
    paddle.seed(0)
    model = ErnieVilForHatefulMemes(
        ErnieVilConfig.tiny(vocab_size=50, v_feature_size=12), text_only=True
    )
    model.eval()
    ids, tmask, feats, loc, imask = _inputs()
    a = model(ids, tmask, feats, loc, imask).numpy()
    b = model(ids, tmask, feats * 3.0 + 1.0, loc, imask).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=0)
