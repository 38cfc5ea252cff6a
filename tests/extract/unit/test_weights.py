"""The upstream pickle loader on the full-size detector with random weights."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hm_extract.config import BUTDConfig
from hm_extract.detector import BUTDDetector, random_detector
from hm_extract.weights import dumps_upstream, load_state, load_weights, rename_table
from hm_shared.errors import HmDataError, MissingWeightsError
from hm_shared.safe_pickle import UnsafePickleError


@pytest.fixture(scope="module")
def source() -> BUTDDetector:
    return random_detector(BUTDConfig(), seed=7)


@pytest.fixture(scope="module")
def upstream(source: BUTDDetector) -> dict[str, np.ndarray]:
    """The source's weights under detectron2's names, as numpy arrays."""
    state = source.state_dict()
    return {up: state[ours].numpy() for up, ours in rename_table(source.config)}


@pytest.fixture(scope="module")
def target() -> BUTDDetector:
    return BUTDDetector(BUTDConfig())


def test_table_uses_detectron2_names(upstream: dict[str, np.ndarray]) -> None:
    for key in (
        "backbone.stem.conv1.weight",
        "backbone.stem.conv1.norm.bias",
        "backbone.res2.0.shortcut.norm.running_var",
        "backbone.res4.22.conv3.weight",
        "proposal_generator.rpn_head.conv.weight",
        "proposal_generator.rpn_head.objectness_logits.bias",
        "proposal_generator.rpn_head.anchor_deltas.weight",
        "roi_heads.res5.2.conv2.norm.weight",
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
        "roi_heads.box_predictor.cls_embedding.weight",
        "roi_heads.box_predictor.fc_attr.weight",
        "roi_heads.box_predictor.attr_score.bias",
    ):
        assert key in upstream, key
    assert upstream["roi_heads.box_predictor.cls_embedding.weight"].shape == (1601, 256)
    assert upstream["roi_heads.box_predictor.fc_attr.weight"].shape == (512, 2304)
    assert upstream["roi_heads.box_predictor.attr_score.weight"].shape == (401, 512)
    assert upstream["proposal_generator.rpn_head.anchor_deltas.weight"].shape == (48, 512, 1, 1)
    assert upstream["roi_heads.box_predictor.bbox_pred.weight"].shape == (6400, 2048)


@pytest.mark.slow  # protocol-2 pickling of 65M floats: ~20 s on two shared cores
def test_pickle_file_loads_strictly_with_identical_values(
    source: BUTDDetector, tmp_path: Path
) -> None:
    path = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    path.write_bytes(dumps_upstream(source, protocol=2))  # Python-2-era bytes encoding
    loaded = BUTDDetector(BUTDConfig())
    report = load_weights(loaded, path)
    assert report.ok and not report.allowed
    theirs = loaded.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(theirs[key], value), key


def _fails(target: BUTDDetector, state: dict[str, np.ndarray], *needles: str) -> str:
    with pytest.raises(HmDataError) as info:
        load_state(target, state, "test.pkl")
    message = str(info.value)
    assert "test.pkl" in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_renamed_key_fails_naming_both_sides(upstream, target) -> None:
    state = dict(upstream)
    state["roi_heads.box_predictor.cls_scores.weight"] = state.pop(
        "roi_heads.box_predictor.cls_score.weight"
    )
    _fails(
        target,
        state,
        "unexpected",
        "roi_heads.box_predictor.cls_scores.weight",
        "missing",
        "roi_heads.box_predictor.cls_score.weight",
    )


def test_missing_key_fails(upstream, target) -> None:
    state = dict(upstream)
    del state["backbone.res3.2.conv2.weight"]
    _fails(target, state, "missing", "backbone.res3.2.conv2.weight")


def test_shape_mismatch_fails(upstream, target) -> None:
    state = dict(upstream)
    state["proposal_generator.rpn_head.objectness_logits.weight"] = np.zeros(
        (15, 512, 1, 1), np.float32
    )
    _fails(target, state, "mismatched", "objectness_logits.weight", "(15, 512, 1, 1)")


def test_non_numeric_array_fails(upstream, target) -> None:
    state = dict(upstream)
    state["backbone.stem.conv1.norm.bias"] = np.full(64, "x")
    _fails(target, state, "mismatched", "backbone.stem.conv1.norm.bias", "dtype <U1")


def test_attribute_keys_only_expected_for_attr_weights(upstream) -> None:
    plain = BUTDDetector(BUTDConfig.for_weights("plain"))
    _fails(plain, dict(upstream), "unexpected", "roi_heads.box_predictor.fc_attr.weight")
    without_attr = {
        k: v for k, v in upstream.items() if "attr" not in k and "cls_embedding" not in k
    }
    assert load_state(plain, without_attr, "test.pkl").ok
    _fails(BUTDDetector(BUTDConfig()), without_attr, "missing", "attribute_head.fc_attr.weight")


def test_folded_batch_norm_statistics_are_filled_with_identity(upstream) -> None:
    state = {k: v for k, v in upstream.items() if not k.endswith(("running_mean", "running_var"))}
    state.pop("proposal_generator.anchor_generator.cell_anchors.0")
    detector = BUTDDetector(BUTDConfig())
    report = load_state(detector, state, "test.pkl")
    assert "backbone.res4.7.conv2.norm.running_var" in dict(report.allowed)
    assert "rpn.cell_anchors" in dict(report.allowed)
    norm = detector.backbone.res4[7].conv2.norm
    # detectron2's FrozenBatchNorm2d buffers: var 1 − eps, so the folded weight scales exactly
    assert torch.equal(norm.running_var, torch.full((256,), 1.0 - norm.eps))
    assert torch.equal(norm.running_mean, torch.zeros(256))
    x = torch.randn(1, 256, 3, 3)
    want = norm.weight[None, :, None, None] * x + norm.bias[None, :, None, None]
    torch.testing.assert_close(norm(x), want, rtol=1e-6, atol=1e-6)


def test_wrong_cell_anchors_fail(upstream, target) -> None:
    state = dict(upstream)
    state["proposal_generator.anchor_generator.cell_anchors.0"] = np.flip(
        state["proposal_generator.anchor_generator.cell_anchors.0"], axis=0
    ).copy()
    _fails(target, state, "cell_anchors", "differ")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_executing_pickle_is_refused_without_running(tmp_path: Path, target) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "faster_rcnn_from_caffe.pkl"
    path.write_bytes(pickle.dumps({"model": {"backbone.stem.conv1.weight": _Evil(marker)}}))
    with pytest.raises(UnsafePickleError, match="system") as info:
        load_weights(target, path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_missing_file_and_wrong_layout(tmp_path: Path, target) -> None:
    with pytest.raises(MissingWeightsError, match="not found"):
        load_weights(target, tmp_path / "absent.pkl")
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"blobs": {}}))
    with pytest.raises(HmDataError, match="'model'"):
        load_weights(target, path)
