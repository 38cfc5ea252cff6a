"""Checkpoint loaders: full-size models from random weights saved under the upstream key names
(written out here from the reference notes, independently of the rename tables), and the
failure paths (renamed, missing, mis-shaped keys, bad files)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.testing import assert_close

from hm_shared.errors import HmDataError
from hm_torch.checkpoints import (
    apply_state_dict,
    is_native,
    native_metadata,
    read_state_dict,
    save_native,
)
from hm_torch.models import oscar, uniter, visualbert
from hm_torch.models.layers import BertSettings
from hm_torch.models.oscar import OscarConfig, OscarForHatefulMemes, OscarForPretraining
from hm_torch.models.uniter import UniterConfig, UniterForHatefulMemes, uniter_format
from hm_torch.models.visualbert import (
    VisualBertConfig,
    VisualBertForHatefulMemes,
    VisualBertForPretraining,
)

Shapes = dict[str, tuple[int, ...]]


def bert_shapes(prefix: str, cfg: BertSettings) -> Shapes:
    h, i = cfg.hidden_size, cfg.intermediate_size
    emb = f"{prefix}embeddings."
    shapes: Shapes = {
        f"{emb}word_embeddings.weight": (cfg.vocab_size, h),
        f"{emb}position_embeddings.weight": (cfg.max_position_embeddings, h),
        f"{emb}token_type_embeddings.weight": (cfg.type_vocab_size, h),
        f"{emb}LayerNorm.weight": (h,),
        f"{emb}LayerNorm.bias": (h,),
        f"{prefix}pooler.dense.weight": (h, h),
        f"{prefix}pooler.dense.bias": (h,),
    }
    for n in range(cfg.num_hidden_layers):
        layer = f"{prefix}encoder.layer.{n}."
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            shapes[f"{layer}{part}.weight"] = (h, h)
            shapes[f"{layer}{part}.bias"] = (h,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{layer}{norm}.weight"] = (h,)
            shapes[f"{layer}{norm}.bias"] = (h,)
        shapes[f"{layer}intermediate.dense.weight"] = (i, h)
        shapes[f"{layer}intermediate.dense.bias"] = (i,)
        shapes[f"{layer}output.dense.weight"] = (h, i)
        shapes[f"{layer}output.dense.bias"] = (h,)
    return shapes


def mlm_shapes(prefix: str, cfg: BertSettings) -> Shapes:
    h = cfg.hidden_size
    return {
        f"{prefix}predictions.transform.dense.weight": (h, h),
        f"{prefix}predictions.transform.dense.bias": (h,),
        f"{prefix}predictions.transform.LayerNorm.weight": (h,),
        f"{prefix}predictions.transform.LayerNorm.bias": (h,),
        f"{prefix}predictions.decoder.weight": (cfg.vocab_size, h),
        f"{prefix}predictions.bias": (cfg.vocab_size,),
        f"{prefix}seq_relationship.weight": (2, h),
        f"{prefix}seq_relationship.bias": (2,),
    }


def uniter_file_shapes(cfg: UniterConfig, with_heads: bool = True) -> Shapes:
    """uniter-{base,large}.pt: `uniter.` BERT + img_embeddings (+ the pre-training heads)."""
    h = cfg.hidden_size
    shapes = bert_shapes("uniter.", cfg)
    img = "uniter.img_embeddings."
    shapes |= {
        f"{img}img_linear.weight": (h, 2048),
        f"{img}img_linear.bias": (h,),
        f"{img}pos_linear.weight": (h, 7),
        f"{img}pos_linear.bias": (h,),
        f"{img}mask_embedding.weight": (2, 2048),
    }
    for norm in ("img_layer_norm", "pos_layer_norm", "LayerNorm"):
        shapes |= {f"{img}{norm}.weight": (h,), f"{img}{norm}.bias": (h,)}
    if with_heads:
        shapes |= mlm_shapes("cls.", cfg)
        shapes |= {
            "feat_regress.net.0.weight": (h, h),
            "region_classifier.net.3.weight": (1601, h),
            "itm_output.weight": (2, h),
            "itm_output.bias": (2,),
        }
    return shapes


def oscar_file_shapes(cfg: OscarConfig) -> Shapes:
    """Oscar large-vg-labels pytorch_model.bin: `bert.` BERT + img_embedding [H, 2054] + cls."""
    shapes = bert_shapes("bert.", cfg)
    shapes |= {
        "bert.img_embedding.weight": (cfg.hidden_size, 2054),
        "bert.img_embedding.bias": (cfg.hidden_size,),
    }
    return shapes | mlm_shapes("cls.", cfg)


MMF_VISUAL = {
    "token_type_embeddings_visual": "visual_token_type_embeddings",
    "position_embeddings_visual": "visual_position_embeddings",
    "projection": "visual_projection",
}


def mmf_file_shapes(cfg: VisualBertConfig) -> Shapes:
    """MMF visual_bert.pretrained.coco model.pth: `model.bert.` + `model.cls.`."""
    h = cfg.hidden_size
    shapes = bert_shapes("model.bert.", cfg)
    shapes |= {
        "model.bert.embeddings.token_type_embeddings_visual.weight": (2, h),
        "model.bert.embeddings.position_embeddings_visual.weight": (cfg.max_position_embeddings, h),
        "model.bert.embeddings.projection.weight": (h, 2048),
        "model.bert.embeddings.projection.bias": (h,),
    }
    return shapes | mlm_shapes("model.cls.", cfg)


def mmf_to_ours(key: str) -> str:
    key = key.replace("model.bert.", "visual_bert.").replace("model.cls.", "cls.")
    for old, new in MMF_VISUAL.items():
        key = key.replace(f"embeddings.{old}.", f"embeddings.{new}.")
    return key


def save_random(path: Path, shapes: Shapes, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    torch.save({k: torch.randn(s, generator=g) for k, s in shapes.items()}, path)
    gc.collect()


def check_values(model: nn.Module, path: Path, rename: Callable[[str], str]) -> int:
    """Every file tensor that has a home in the model arrived there unchanged (up to slicing)."""
    ours = model.state_dict()
    checked = 0
    for key, value in torch.load(path, weights_only=True, mmap=True).items():
        target = rename(key)
        if target in ours and not target.endswith("predictions.decoder.weight"):
            want = value[:, : ours[target].shape[1]] if value.shape != ours[target].shape else value
            assert_close(ours[target], want, rtol=0, atol=0, msg=f"{key} → {target}")
            checked += 1
    return checked


# --- full-size models (one at a time; large ≈ 330M params ≈ 1.3 GB fp32) -----------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", ["base", "large"])
def test_uniter_full_size_loads_strictly(tmp_path: Path, size: str) -> None:
    cfg = getattr(UniterConfig, size)()
    path = tmp_path / f"uniter-{size}.pt"
    save_random(path, uniter_file_shapes(cfg))
    model = UniterForHatefulMemes(cfg)
    report = uniter.FAMILY.load(model, path)
    assert report.ok
    assert {k for k, _ in report.allowed if k.startswith("classifier.")} == {
        k for k in model.state_dict() if k.startswith("classifier.")
    }
    assert check_values(model, path, lambda k: k) == len(bert_shapes("uniter.", cfg)) + 11


@pytest.mark.slow
@pytest.mark.parametrize("size", ["base", "large"])
def test_oscar_full_size_loads_strictly_2052_and_2054(tmp_path: Path, size: str) -> None:
    cfg = getattr(OscarConfig, size)()
    path = tmp_path / "pytorch_model.bin"
    save_random(path, oscar_file_shapes(cfg))
    model = OscarForHatefulMemes(cfg)  # vilio: 2052 = 2048 + 4, the file's layer is cut
    assert oscar.FAMILY.load(model, path).ok
    assert model.bert.img_embedding.weight.shape[1] == 2052
    check_values(model, path, lambda k: k)
    del model
    gc.collect()
    if size == "base":  # the 2054-wide layer and the pre-training heads load whole
        model = OscarForPretraining(cfg.replace(pos_dim=6))
        report = oscar.FAMILY.load(model, path)
        assert report.ok and not [k for k, _ in report.allowed if not k.endswith("decoder.weight")]
        check_values(model, path, lambda k: k)
        # vilio's task-pretrained LAST_BO.pth: its model's state dict, with the position_ids
        # buffer its transformers copy saves
        last = {**model.state_dict(), "bert.embeddings.position_ids": torch.arange(512)[None]}
        torch.save(last, tmp_path / "LAST_BO.pth")
        del model, last
        gc.collect()
        model = OscarForHatefulMemes(cfg.replace(pos_dim=6))
        report = oscar.FAMILY.load(model, tmp_path / "LAST_BO.pth")
        assert "bert.embeddings.position_ids" in dict(report.allowed)
        check_values(model, tmp_path / "LAST_BO.pth", lambda k: k)


@pytest.mark.slow
def test_visualbert_mmf_base_loads_strictly(tmp_path: Path) -> None:
    cfg = VisualBertConfig.base()
    path = tmp_path / "model.pth"
    save_random(path, mmf_file_shapes(cfg))
    model = VisualBertForHatefulMemes(cfg)
    report = visualbert.FAMILY.load(model, path)
    assert report.format == "visualbert-mmf" and report.ok
    check_values(model, path, mmf_to_ours)
    del model
    gc.collect()
    pretraining = VisualBertForPretraining(cfg)
    assert visualbert.FAMILY.load(pretraining, path).ok
    assert check_values(pretraining, path, mmf_to_ours) == len(mmf_file_shapes(cfg)) - 1
    # the tied decoder is the word-embedding table, which came from model.bert.
    emb = pretraining.visual_bert.embeddings.word_embeddings.weight
    assert pretraining.cls.predictions.decoder.weight is emb


# --- failure paths (tiny models) -----------------------------------------------------------------


def _tiny_uniter_file(tmp_path: Path, edit: Callable[[dict[str, Tensor]], None]) -> Path:
    cfg = UniterConfig.tiny()
    g = torch.Generator().manual_seed(0)
    shapes = {
        k: tuple(cfg.vocab_size if d == 28996 else d for d in s)
        for k, s in uniter_file_shapes(cfg, with_heads=False).items()
    }
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    edit(state)
    path = tmp_path / "uniter-tiny.pt"
    torch.save(state, path)
    return path


def test_renamed_key_fails_naming_both_sides(tmp_path: Path) -> None:
    old = "uniter.encoder.layer.1.attention.self.query.weight"

    def rename(state: dict[str, Tensor]) -> None:
        state["uniter.encoder.layer.1.attention.self.q.weight"] = state.pop(old)

    path = _tiny_uniter_file(tmp_path, rename)
    with pytest.raises(HmDataError) as err:
        uniter.FAMILY.load(UniterForHatefulMemes(UniterConfig.tiny()), path)
    message = str(err.value)
    assert str(path) in message
    assert old in message  # missing on our side
    assert "uniter.encoder.layer.1.attention.self.q.weight" in message  # unexpected


def test_missing_key_fails_naming_it(tmp_path: Path) -> None:
    key = "uniter.img_embeddings.pos_linear.bias"
    path = _tiny_uniter_file(tmp_path, lambda s: s.pop(key))
    with pytest.raises(HmDataError, match=r"missing .*uniter\.img_embeddings\.pos_linear\.bias"):
        uniter.FAMILY.load(UniterForHatefulMemes(UniterConfig.tiny()), path)


def test_shape_mismatch_fails_naming_it(tmp_path: Path) -> None:
    key = "uniter.pooler.dense.weight"
    path = _tiny_uniter_file(tmp_path, lambda s: s.__setitem__(key, torch.zeros(3, 3)))
    with pytest.raises(HmDataError, match=r"mismatched: uniter\.pooler\.dense\.weight: file"):
        uniter.FAMILY.load(UniterForHatefulMemes(UniterConfig.tiny()), path)


def test_unknown_extra_key_fails(tmp_path: Path) -> None:
    extra = "uniter.extra.weight"
    path = _tiny_uniter_file(tmp_path, lambda s: s.__setitem__(extra, torch.ones(1)))
    with pytest.raises(HmDataError, match=r"unexpected .*uniter\.extra\.weight"):
        uniter.FAMILY.load(UniterForHatefulMemes(UniterConfig.tiny()), path)


def test_legacy_layernorm_names_and_swa_prefix_are_accepted(tmp_path: Path) -> None:
    def legacy(state: dict[str, Tensor]) -> None:
        for key in [k for k in state if k.endswith("LayerNorm.weight")]:
            state[key.replace(".weight", ".gamma")] = state.pop(key)
        for key in list(state):
            state[f"module.{key}"] = state.pop(key)
        state["n_averaged"] = torch.tensor(3)

    path = _tiny_uniter_file(tmp_path, legacy)
    report = uniter.FAMILY.load(UniterForHatefulMemes(UniterConfig.tiny()), path)
    assert report.ok


def test_vilio_last_bo_with_its_position_ids_buffer_loads(tmp_path: Path) -> None:
    # vilio's task-pretrained OSCAR (`LAST_BO.pth`, saved by its transformers 3.0.2 copy):
    # `bert.*` + `cls.*` + the `bert.embeddings.position_ids` buffer (arange, not a weight)
    cfg = OscarConfig.tiny()
    pretrained = OscarForPretraining(cfg)
    state = dict(pretrained.state_dict())
    state["bert.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None]
    torch.save(state, tmp_path / "LAST_BO.pth")
    model = OscarForHatefulMemes(cfg)
    report = oscar.FAMILY.load(model, tmp_path / "LAST_BO.pth")
    reasons = dict(report.allowed)
    assert reasons["bert.embeddings.position_ids"].startswith("a buffer of position indices")
    assert_close(model.bert.pooler.dense.weight, pretrained.bert.pooler.dense.weight)
    # a "position_ids" that is not the index table is not waved through
    state["bert.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None] * 2
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(HmDataError, match=r"unexpected .*bert\.embeddings\.position_ids"):
        oscar.FAMILY.load(OscarForHatefulMemes(cfg), tmp_path / "odd.pth")


def test_report_lists_allowed_keys_with_reasons() -> None:
    cfg = UniterConfig.tiny()
    model = UniterForHatefulMemes(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    state["itm_output.weight"] = torch.zeros(2, cfg.hidden_size)
    report = apply_state_dict(model, state, uniter_format(model), "memory")
    assert report.ok
    reasons = dict(report.allowed)
    assert "intentionally random" in reasons["classifier.0.weight"]
    assert "pre-training" in reasons["itm_output.weight"]


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(HmDataError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(HmDataError, match=r"garbage\.pt: cannot read checkpoint"):
        read_state_dict(garbage)
    odd = tmp_path / "odd.pt"
    torch.save({"weight": torch.ones(1), "step": 3}, odd)
    with pytest.raises(HmDataError, match="'step' holds a int"):
        read_state_dict(odd)


def test_wrong_model_family_fails_clearly(tmp_path: Path) -> None:
    path = _tiny_uniter_file(tmp_path, lambda s: None)
    with pytest.raises(HmDataError, match="not a VisualBERT checkpoint"):
        visualbert.FAMILY.load(VisualBertForHatefulMemes(VisualBertConfig.tiny()), path)


def test_native_pretraining_output_feeds_fine_tuning(tmp_path: Path) -> None:
    cfg = OscarConfig.tiny()
    pre = OscarForPretraining(cfg)
    path = tmp_path / "model.safetensors"
    save_native(pre, path, cfg.to_dict())
    assert is_native(path)
    fine = OscarForHatefulMemes(cfg)
    report = oscar.FAMILY.load(fine, path)
    assert report.ok
    for key, value in pre.bert.state_dict().items():
        assert_close(fine.bert.state_dict()[key], value)
    allowed = {k for k, _ in report.allowed}
    assert "classifier.0.weight" in allowed and "cls.seq_relationship.weight" in allowed


def test_native_file_is_byte_identical_for_the_same_weights(tmp_path: Path) -> None:
    # A pre-training output's hash is its consumers' cache key: the docker and local runtimes
    # (and any rerun) must write the same bytes. safetensors writes its metadata in hash-map
    # order, which changes from one save to the next.
    cfg = OscarConfig.tiny()
    model = OscarForPretraining(cfg)
    blobs = set()
    for i in range(8):
        path = tmp_path / f"model{i}.safetensors"
        save_native(model, path, cfg.to_dict())
        blobs.add(path.read_bytes())
    assert len(blobs) == 1
    assert native_metadata(path) == {
        "config": json.dumps(cfg.to_dict()),
        "format": "hm_torch",
        "model": "OscarForPretraining",
    }
    assert_close(
        load_file(str(path))["bert.embeddings.word_embeddings.weight"],
        model.state_dict()["bert.embeddings.word_embeddings.weight"],
    )
