"""LXMERT (X): strict loading of the released layout, parity with transformers' LxmertModel,
padding invariance, zero regions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from torch.testing import assert_close

from hm_shared.errors import HmDataError
from hm_torch.checkpoints import apply_state_dict, load_checkpoint
from hm_torch.models.lxmert import (
    LxmertConfig,
    LxmertForHatefulMemes,
    LxmertForPretraining,
    lxmert_format,
)


def _hf_config(cfg: LxmertConfig) -> transformers.LxmertConfig:
    return transformers.LxmertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        l_layers=cfg.l_layers,
        x_layers=cfg.x_layers,
        r_layers=cfg.r_layers,
        visual_feat_dim=cfg.visual_feat_dim,
        visual_pos_dim=cfg.visual_pos_dim,
    )


def _released_file(cfg: LxmertConfig, path: Path) -> dict[str, torch.Tensor]:
    """A random `LxmertForPreTraining` saved as airsplay/lxmert saves `EpochNN_LXRT.pth`: the
    state dict of an `nn.DataParallel` model, `module.bert.*`, `module.cls.*`,
    `module.obj_predict_head.*`, `module.answer_head.*` (transformers' names are the original's
    with `bert.` spelled `lxmert.`)."""
    torch.manual_seed(0)
    hf = transformers.LxmertForPreTraining(_hf_config(cfg))
    state = {}
    for key, value in hf.state_dict().items():
        key = "bert." + key.removeprefix("lxmert.") if key.startswith("lxmert.") else key
        state[f"module.{key}"] = value
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("lxmert") / "Epoch18_LXRT.pth"
    return path, _released_file(LxmertConfig.base(), path)


def _batch(cfg: LxmertConfig, b: int = 3, t: int = 7, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text_mask = torch.ones(b, t)
    text_mask[0, 4:] = 0
    img_mask = torch.ones(b, n)
    img_mask[1, 2:] = 0
    return {
        "input_ids": torch.randint(1, cfg.vocab_size, (b, t), generator=g) * text_mask.long(),
        "token_type_ids": torch.zeros(b, t, dtype=torch.long),
        "text_mask": text_mask,
        "img_feats": torch.randn(b, n, cfg.visual_feat_dim, generator=g),
        "img_pos": torch.rand(b, n, 4, generator=g),
        "img_mask": img_mask,
    }


def test_sizes() -> None:
    base, original, tiny = LxmertConfig.base(), LxmertConfig.original(), LxmertConfig.tiny()
    assert (base.l_layers, base.x_layers, base.r_layers, base.hidden_size) == (12, 5, 2, 768)
    assert (original.l_layers, original.x_layers, original.r_layers) == (9, 5, 5)
    assert tiny.hidden_size <= 40 and tiny.vocab_size <= 100
    with pytest.raises(ValueError, match="base width"):
        LxmertConfig.large()


def test_released_layout_loads_strictly_into_the_hm_model(released) -> None:
    path, state = released
    model = LxmertForHatefulMemes(LxmertConfig.base())
    report = load_checkpoint(model, path, lxmert_format(model))
    allowed = {key for key, _ in report.allowed}
    # deliberately unused: every pre-training head of the file, and our task head is random
    unused = {k.removeprefix("module.") for k in state if not k.startswith("module.bert.")}
    assert {k for k in allowed if not k.startswith("classifier.")} == unused
    assert {k.split(".")[0] for k in unused} == {"cls", "obj_predict_head", "answer_head"}
    assert {k for k in allowed if k.startswith("classifier.")} == {
        f"classifier.{i}.{p}" for i in (0, 2, 3) for p in ("weight", "bias")
    }
    ours = model.state_dict()
    backbone = [k for k in state if k.startswith("module.bert.")]
    assert len(report.loaded) == len(backbone) == 12 * 16 + 2 * 16 + 5 * 42 + 4 * 2 + 5 + 2
    for key in backbone:
        assert torch.equal(ours[key.removeprefix("module.")], state[key]), key


def test_released_layout_feeds_task_pretraining_with_the_mlm_head(released) -> None:
    path, state = released
    model = LxmertForPretraining(LxmertConfig.base())
    report = load_checkpoint(model, path, lxmert_format(model))
    allowed = {key for key, _ in report.allowed}
    assert "module.cls.predictions.decoder.weight" not in state or (
        "cls.predictions.decoder.weight" in allowed
    )
    assert {k.split(".")[0] for k in allowed} == {"obj_predict_head", "answer_head", "cls"}
    assert torch.equal(model.cls.predictions.bias, state["module.cls.predictions.bias"])
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_the_original_9_5_5_release_needs_its_layer_counts(tmp_path: Path) -> None:
    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100)
    original = LxmertConfig.original().replace(**small, visual_feat_dim=16)
    path = tmp_path / "model_LXRT.pth"
    _released_file(original, path)
    model = LxmertForHatefulMemes(original)
    assert load_checkpoint(model, path, lxmert_format(model)).ok
    vilio = LxmertForHatefulMemes(LxmertConfig.base().replace(**small, visual_feat_dim=16))
    with pytest.raises(HmDataError, match=r"missing .*bert\.encoder\.layer\.9\.") as caught:
        load_checkpoint(vilio, path, lxmert_format(vilio))
    assert "unexpected (in the file, nowhere to go): bert.encoder.r_layers.2." in str(caught.value)


@pytest.mark.parametrize(
    "sizes",
    [
        dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, l_layers=2, x_layers=1),
        dict(hidden_size=48, num_attention_heads=6, intermediate_size=80, l_layers=3, x_layers=2),
    ],
)
def test_outputs_equal_transformers_lxmert(sizes: dict[str, int]) -> None:
    cfg = LxmertConfig.tiny().replace(**sizes, r_layers=2, visual_feat_dim=24)
    torch.manual_seed(1)
    hf = transformers.LxmertModel(_hf_config(cfg)).eval()
    ours = LxmertForHatefulMemes(cfg).eval()
    state = {f"bert.{k}": v for k, v in hf.state_dict().items()}
    report = apply_state_dict(ours, state, lxmert_format(ours), "transformers")
    assert report.ok and len(report.loaded) == len(state)
    batch = _batch(cfg)
    with torch.no_grad():
        want = hf(
            input_ids=batch["input_ids"],
            visual_feats=batch["img_feats"],
            visual_pos=batch["img_pos"],
            attention_mask=batch["text_mask"],
            visual_attention_mask=batch["img_mask"],
            token_type_ids=batch["token_type_ids"],
        )
        got = ours.bert(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_pos"],
            batch["img_mask"],
            batch["token_type_ids"],
        )
    assert_close(got.language, want.language_output, atol=1e-5, rtol=1e-5)
    assert_close(got.vision, want.vision_output, atol=1e-5, rtol=1e-5)
    assert_close(got.pooled, want.pooled_output, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_the_logits() -> None:
    cfg = LxmertConfig.tiny().replace(visual_feat_dim=16)
    model = LxmertForHatefulMemes(cfg).eval()
    batch = _batch(cfg)
    padded = dict(batch)
    b, pad = 3, 4  # extra padded regions with junk features, and extra padded text
    padded["img_feats"] = torch.cat([batch["img_feats"], 100 * torch.randn(b, pad, 16)], 1)
    padded["img_pos"] = torch.cat([batch["img_pos"], torch.rand(b, pad, 4)], 1)
    padded["img_mask"] = torch.cat([batch["img_mask"], torch.zeros(b, pad)], 1)
    for key in ("input_ids", "token_type_ids", "text_mask"):
        padded[key] = torch.cat([batch[key], torch.zeros_like(batch[key])[:, :3]], 1)
    with torch.no_grad():
        assert_close(model(padded), model(batch), atol=1e-5, rtol=1e-5)


def test_zero_regions_give_finite_logits() -> None:
    cfg = LxmertConfig.tiny().replace(visual_feat_dim=16)
    model = LxmertForHatefulMemes(cfg).eval()
    batch = _batch(cfg, n=0)
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    word_logits, match_logits = LxmertForPretraining(cfg).eval()(batch)
    assert word_logits.shape == (3, 7, cfg.vocab_size) and match_logits.shape == (3, 2)
