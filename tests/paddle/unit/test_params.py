"""The params/ loader: Paddle's own per-variable saver, strictness, full-size base and large."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import paddle
import pytest

from hm_paddle.model import ErnieVilConfig, ErnieVilForHatefulMemes
from hm_paddle.params import (
    HEAD,
    HEADS_REASON,
    IGNORED_REASON,
    RANDOM_REASON,
    export_upstream_params,
    load_upstream_params,
    read_lod_tensor,
    read_params_dir,
    rename_table,
    write_lod_tensor,
)
from hm_shared.errors import HmDataError


def _tiny() -> ErnieVilForHatefulMemes:
    return ErnieVilForHatefulMemes(ErnieVilConfig.tiny(vocab_size=50, v_feature_size=12))


def _upstream_shapes(model: ErnieVilForHatefulMemes) -> dict[str, list[int]]:
    state = model.state_dict()
    table = rename_table(model.ernie_vil.config)
    return {up: list(state[ours].shape) for up, ours in table.items()}


def _save_with_paddle(root: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` with Paddle's legacy static-graph saver (one file per variable)."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            params = [
                paddle.static.create_parameter(list(a.shape), "float32", name=name)
                for name, a in arrays.items()
            ]
        exe = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe.run(startup)
            for name, array in arrays.items():
                scope.find_var(name).get_tensor().set(array, paddle.CPUPlace())
            paddle.static.io.save_vars(exe, str(root), main, vars=params)
    finally:
        paddle.disable_static()


def test_rename_table_covers_every_parameter() -> None:
    model = _tiny()
    ours = set(rename_table(model.ernie_vil.config).values()) | set(HEAD.values())
    assert ours == set(model.state_dict())


def test_upstream_layer_names_follow_the_interleaving() -> None:
    names = rename_table(ErnieVilConfig.base())
    assert "encoder_layer_11_post_ffn_layer_norm_scale" in names
    assert "encoder_vlayer_5_ffn_fc_1.w_0" in names
    assert "encoder_colayer_5_vl_multi_head_att_key_fc.b_0" in names
    assert "encoder_layer_12_ffn_fc_0.w_0" not in names
    large = rename_table(ErnieVilConfig.large())
    assert "encoder_layer_23_ffn_fc_0.w_0" in large
    assert "encoder_colayer_6_ffn_fc_0.w_0" not in large


def test_paddle_saved_directory_loads_with_identical_values(tmp_path: Path) -> None:
    model = _tiny()
    rng = np.random.default_rng(0)
    shapes = _upstream_shapes(model) | {"hm_fc.w_0": [40, 1], "hm_fc.b_0": [1]}
    arrays = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    _save_with_paddle(tmp_path, arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(arrays)
    report = load_upstream_params(model, tmp_path)
    assert sorted(report.loaded) == sorted(arrays) and report.allowed_keys(RANDOM_REASON) == []
    state = model.state_dict()
    table = rename_table(model.ernie_vil.config) | HEAD
    for name, array in arrays.items():
        np.testing.assert_array_equal(state[table[name]].numpy(), array, err_msg=name)
    # fc weights keep fluid's [in, out] layout: the query fc of text layer 0 is [H, H], image_emb
    # is [v_feature_size, v_hidden].
    assert list(state["ernie_vil.image_emb.weight"].shape) == [12, 40]


def test_head_absent_is_reported_random(tmp_path: Path) -> None:
    model = _tiny()
    export_upstream_params(model, tmp_path)
    for name in HEAD:
        (tmp_path / name).unlink()
    (tmp_path / "encoder_layer_0_ffn_fc_0.w_0_moment1_0").write_bytes(
        (tmp_path / "encoder_layer_0_ffn_fc_0.w_0").read_bytes()
    )
    report = load_upstream_params(_tiny(), tmp_path)
    assert report.allowed_keys(RANDOM_REASON) == ["hm_fc.bias", "hm_fc.weight"]
    assert report.allowed_keys(IGNORED_REASON) == ["encoder_layer_0_ffn_fc_0.w_0_moment1_0"]


def test_a_vilio_fine_tune_output_dir_loads_with_its_head(tmp_path: Path) -> None:
    # `fluid.io.save_persistables` of vilio's ERNIE training program: the parameters (hm_fc
    # included), Adam's moments and beta powers, the step counter and the scheduled lr
    trained = _tiny()
    export_upstream_params(trained, tmp_path)
    extras = {"scheduled_learning_rate": np.array([1e-5], np.float32)}
    extras["@LR_DECAY_COUNTER@"] = np.array([2500], np.int64)
    for name in ("hm_fc.w_0", "encoder_layer_0_ffn_fc_0.w_0"):
        shape = read_lod_tensor(tmp_path / name).shape
        for acc in ("moment1_0", "moment2_0"):
            extras[f"{name}_{acc}"] = np.zeros(shape, np.float32)
        for acc in ("beta1_pow_acc_0", "beta2_pow_acc_0"):
            extras[f"{name}_{acc}"] = np.array([0.9], np.float32)
    for name, array in extras.items():
        write_lod_tensor(tmp_path / name, array)
    model = _tiny()
    report = load_upstream_params(model, tmp_path)
    assert report.allowed_keys(RANDOM_REASON) == []
    assert sorted(report.allowed_keys(IGNORED_REASON)) == sorted(extras)
    np.testing.assert_array_equal(model.hm_fc.weight.numpy(), trained.hm_fc.weight.numpy())


def test_missing_variable_fails_with_its_name(tmp_path: Path) -> None:
    export_upstream_params(_tiny(), tmp_path)
    (tmp_path / "encoder_colayer_1_vl_ffn_fc_0.b_0").unlink()
    with pytest.raises(HmDataError, match=r"missing [^:]*: encoder_colayer_1_vl_ffn_fc_0\.b_0"):
        load_upstream_params(_tiny(), tmp_path)


def test_extra_variable_fails_with_its_name(tmp_path: Path) -> None:
    export_upstream_params(_tiny(), tmp_path)
    write_lod_tensor(tmp_path / "image_class_fc.w_0", np.ones((32, 1601), np.float32))
    with pytest.raises(HmDataError, match=r"unexpected [^:]*: image_class_fc\.w_0") as error:
        load_upstream_params(_tiny(), tmp_path)
    assert "ignore_params" in str(error.value)  # the way out is named
    # An explicit allow-list (params.ignore_params of the recipe) accepts it.
    report = load_upstream_params(_tiny(), tmp_path, extra_ignored=[r"image_class_.*"])
    assert report.allowed_keys(IGNORED_REASON) == ["image_class_fc.w_0"]


def test_ernies_own_pretraining_heads_are_reported_unused(tmp_path: Path) -> None:
    # a released params/ that kept ERNIE's text pre-training heads (earlier ERNIE releases did)
    export_upstream_params(_tiny(), tmp_path)
    h = 32
    heads = {
        "mask_lm_trans_fc.w_0": (h, h),
        "mask_lm_trans_fc.b_0": (h,),
        "mask_lm_trans_layer_norm_scale": (h,),
        "mask_lm_trans_layer_norm_bias": (h,),
        "mask_lm_out_fc.b_0": (50,),
        "next_sent_fc.w_0": (h, 2),
        "next_sent_fc.b_0": (2,),
        "pooled_fc.w_0": (h, h),
        "pooled_fc.b_0": (h,),
    }
    for name, shape in heads.items():
        write_lod_tensor(tmp_path / name, np.ones(shape, np.float32))
    report = load_upstream_params(_tiny(), tmp_path)
    assert sorted(report.allowed_keys(HEADS_REASON)) == sorted(heads)
    assert report.unexpected == [] and report.allowed_keys(IGNORED_REASON) == []


def test_shape_mismatch_fails_with_name_and_shapes(tmp_path: Path) -> None:
    export_upstream_params(_tiny(), tmp_path)
    write_lod_tensor(tmp_path / "image_loc.w_0", np.ones((4, 40), np.float32))
    with pytest.raises(HmDataError, match=r"image_loc\.w_0 \[4, 40\] vs \[5, 40\]"):
        load_upstream_params(_tiny(), tmp_path)


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "word_embedding"
    write_lod_tensor(path, np.ones((3, 2), np.float32))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(HmDataError, match=r"word_embedding: not a Paddle LoDTensor"):
        read_lod_tensor(path)
    with pytest.raises(HmDataError, match="params directory not found"):
        read_params_dir(tmp_path / "nope")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.float64])
def test_writer_reader_round_trip(tmp_path: Path, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    write_lod_tensor(tmp_path / "x", array)
    got = read_lod_tensor(tmp_path / "x")
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["base", "large"])
def test_full_size_random_params_load_strictly(tmp_path: Path, size: str) -> None:
    cfg = ErnieVilConfig.named(size)
    paddle.seed(1)
    written = export_upstream_params(ErnieVilForHatefulMemes(cfg), tmp_path)
    gc.collect()  # one full-size model in memory at a time
    h, vocab = cfg.hidden_size, cfg.vocab_size
    extras = {  # ERNIE's text pre-training heads, and a fine-tune output's optimiser state
        "mask_lm_trans_fc.w_0": (h, h),
        "mask_lm_trans_fc.b_0": (h,),
        "mask_lm_trans_layer_norm_scale": (h,),
        "mask_lm_trans_layer_norm_bias": (h,),
        "mask_lm_out_fc.b_0": (vocab,),
        "next_sent_fc.w_0": (h, 2),
        "next_sent_fc.b_0": (2,),
        "word_embedding_moment1_0": (vocab, h),
        "word_embedding_moment2_0": (vocab, h),
        "word_embedding_beta1_pow_acc_0": (1,),
        "scheduled_learning_rate": (1,),
    }
    for name, shape in extras.items():
        write_lod_tensor(tmp_path / name, np.zeros(shape, np.float32))
    paddle.seed(2)
    model = ErnieVilForHatefulMemes(cfg)
    report = load_upstream_params(model, tmp_path)
    assert sorted(report.loaded) == written
    left_out = report.allowed_keys(HEADS_REASON) + report.allowed_keys(IGNORED_REASON)
    assert sorted(left_out) == sorted(extras)
    state = model.state_dict()
    for upstream, ours in (rename_table(cfg) | HEAD).items():
        np.testing.assert_array_equal(
            state[ours].numpy(), read_lod_tensor(tmp_path / upstream), err_msg=upstream
        )
    n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert n_params > (200e6 if size == "base" else 500e6)
