"""Load the upstream `faster_rcnn_from_caffe{,_attr}.pkl` through an explicit rename table.

The files are pickles of `{"model": {detectron2_name: numpy array}, ...}` (maybe with
`__author__` or `matching_heuristics` beside "model"; those are ignored). They are read with
`hm_shared.safe_pickle.restricted_loads`, which admits only numpy arrays and plain containers,
so a file cannot run code. Every key is accounted for in a `KeyAccount`: our keys that got no
value (missing), upstream keys that went nowhere (unexpected) and shape/value mismatches; loading
fails unless all are empty, except for the allow-listed keys in `OPTIONAL`, each with its reason.
"""

from __future__ import annotations

import fnmatch
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from hm_extract.config import BUTDConfig
from hm_extract.detector import BUTDDetector
from hm_shared.errors import HmDataError, MissingWeightsError
from hm_shared.key_account import KeyAccount
from hm_shared.safe_pickle import restricted_loads

Pairs = list[tuple[str, str]]

_CONV_NORM = ("weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var")
_RPN_LAYERS = ("conv", "objectness_logits", "anchor_deltas")

# Our keys a checkpoint may lack, and why that is fine.
OPTIONAL: dict[str, str] = {
    # Caffe2-converted frozen BN folds the statistics into weight/bias; detectron2's
    # FrozenBatchNorm2d then keeps its initial buffers, mean 0 and var 1 − eps, so that
    # weight / sqrt(var + eps) is exactly the weight. We fill the same.
    "*.norm.running_mean": "frozen BN statistics folded into weight/bias (filled with 0)",
    "*.norm.running_var": "frozen BN statistics folded into weight/bias (filled with 1 − eps)",
    # detectron2 keeps the cell anchors as a buffer; they follow from the config. When the file
    # has them they must equal ours (a check of anchor order), when not, ours are kept.
    "rpn.cell_anchors": "anchors follow from the config",
}


def conv_norm_pairs(upstream: str, ours: str) -> Pairs:
    """A conv and its frozen BN (detectron2 `Conv2d(norm=...)`)."""
    return [(f"{upstream}.{name}", f"{ours}.{name}") for name in _CONV_NORM]


def stage_pairs(upstream_fmt: str, ours_fmt: str, num_blocks: int) -> Pairs:
    """Bottleneck blocks of one stage; the formats take `{i}`. Block 0 has the shortcut."""
    pairs: Pairs = []
    for i in range(num_blocks):
        convs = ("shortcut", "conv1", "conv2", "conv3") if i == 0 else ("conv1", "conv2", "conv3")
        for conv in convs:
            pairs += conv_norm_pairs(
                f"{upstream_fmt.format(i=i)}.{conv}", f"{ours_fmt.format(i=i)}.{conv}"
            )
    return pairs


def linear_pairs(upstream: str, ours: str, names: tuple[str, ...] = ("weight", "bias")) -> Pairs:
    return [(f"{upstream}.{name}", f"{ours}.{name}") for name in names]


def rename_table(config: BUTDConfig) -> Pairs:
    """(upstream detectron2 key, our key) for every tensor of the detector built from `config`."""
    pairs = conv_norm_pairs("backbone.stem.conv1", "backbone.stem.conv1")
    for stage, num_blocks in zip((2, 3, 4), config.stage_blocks, strict=True):
        pairs += stage_pairs(f"backbone.res{stage}.{{i}}", f"backbone.res{stage}.{{i}}", num_blocks)
    for layer in _RPN_LAYERS:
        pairs += linear_pairs(f"proposal_generator.rpn_head.{layer}", f"rpn.head.{layer}")
    pairs.append(("proposal_generator.anchor_generator.cell_anchors.0", "rpn.cell_anchors"))
    pairs += stage_pairs("roi_heads.res5.{i}", "roi_heads.res5.{i}", config.res5_blocks)
    predictor = "roi_heads.box_predictor"
    for layer in ("cls_score", "bbox_pred"):
        pairs += linear_pairs(f"{predictor}.{layer}", f"{predictor}.{layer}")
    if config.attributes:  # upstream keeps the attribute layers inside the box predictor
        pairs += linear_pairs(
            f"{predictor}.cls_embedding", "attribute_head.cls_embedding", ("weight",)
        )
        for layer in ("fc_attr", "attr_score"):
            pairs += linear_pairs(f"{predictor}.{layer}", f"attribute_head.{layer}")
    return pairs


def read_upstream(data: bytes, source: Path | str) -> dict[str, np.ndarray]:
    """The "model" dict of an upstream pickle, refusing anything but arrays and containers."""
    obj = restricted_loads(data, encoding="latin1", source=source)
    if not isinstance(obj, dict) or "model" not in obj:
        found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise HmDataError(
            f"expected a dict with key 'model' (detectron2 layout), got {found}", source
        )
    model = obj["model"]
    if not isinstance(model, dict):
        raise HmDataError(f"'model' must map names to arrays, got {type(model).__name__}", source)
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise HmDataError(
                f"'model' entry {key!r} is a {type(value).__name__}, expected a "
                "numpy array under a string key",
                source,
            )
    return model


def _optional_reason(key: str) -> str | None:
    return next(
        (why for pattern, why in OPTIONAL.items() if fnmatch.fnmatchcase(key, pattern)), None
    )


def load_state(
    detector: BUTDDetector, state: Mapping[str, np.ndarray], source: Path | str
) -> KeyAccount:
    """Copy `state` (upstream names) into `detector`; raise `HmDataError` unless it all fits."""
    ours = detector.state_dict()
    mapping = dict(rename_table(detector.config))
    report = KeyAccount(str(source), "detectron2")
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = mapping.get(key)
        if target is None or target not in ours:
            report.unexpected.append(key)
            continue
        expected = ours[target]
        if value.dtype.kind not in "fiu":
            report.mismatched.append(f"{key}: dtype {value.dtype}, expected numbers")
            continue
        if tuple(value.shape) != tuple(expected.shape):
            report.mismatched.append(
                f"{key}: file {tuple(value.shape)}, detector {tuple(expected.shape)}"
            )
            continue
        tensor = torch.from_numpy(np.array(value, copy=True)).to(expected.dtype)
        if target == "rpn.cell_anchors" and not torch.allclose(tensor, expected, atol=1e-3):
            report.mismatched.append(f"{key}: values differ from the configured anchors")
            continue
        loaded[target] = tensor
    for key, expected in ours.items():
        if key in loaded:
            continue
        reason = _optional_reason(key)
        if reason is None:
            report.missing.append(key)
            continue
        report.allowed.append((key, reason))
        if key.endswith("running_mean"):
            loaded[key] = torch.zeros_like(expected)
        elif key.endswith("running_var"):
            eps = detector.get_submodule(key.removesuffix(".running_var")).eps
            loaded[key] = torch.full_like(expected, 1.0 - eps)
        else:
            loaded[key] = expected
    report.raise_for_errors("Expected the detector checkpoint named in recipes.toml")
    filled = {key for key, _ in report.allowed}
    report.loaded = sorted(k for k in loaded if k not in filled)
    detector.load_state_dict(loaded, strict=True)
    return report


def load_weights(detector: BUTDDetector, path: Path) -> KeyAccount:
    """Load an upstream weights file into `detector` (strictly, see `load_state`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError("weights file not found", path)
    return load_state(detector, read_upstream(path.read_bytes(), path), path)


def dumps_upstream(detector: BUTDDetector, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """The detector's weights as an upstream pickle (detectron2 names, numpy arrays).

    `protocol=2` writes bytes the way Python-2-era detectron files do (the reader's latin1
    path); it is about ten times slower and 50% larger.
    """
    state = detector.state_dict()
    model = {
        up: state[ours].detach().cpu().numpy()
        for up, ours in rename_table(detector.config)
        if ours in state
    }
    return pickle.dumps({"model": model, "__author__": "hm_extract"}, protocol=protocol)


__all__ = [
    "OPTIONAL",
    "conv_norm_pairs",
    "dumps_upstream",
    "linear_pairs",
    "load_state",
    "load_weights",
    "read_upstream",
    "rename_table",
    "stage_pairs",
]
