"""Hyper-parameters of the bottom-up-attention detector and the six feature variants.

`BUTDConfig()` is the detector exactly as vilio ran it (reference/models.md §7): the
`faster_rcnn_R_101_C4_{attr_,}caffemaxpool.yaml` configs with vilio's test-time overrides
(600/1000 input, 300 post-NMS proposals, RPN NMS 0.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

WeightsKind = Literal["attr", "plain"]

# The two released checkpoints (reference/upstream.md §2a); vilio uses the 36-box models for
# every box count.
WEIGHT_FILES: dict[WeightsKind, str] = {
    "attr": "faster_rcnn_from_caffe_attr.pkl",
    "plain": "faster_rcnn_from_caffe.pkl",
}
WEIGHT_URLS: dict[WeightsKind, str] = {
    kind: f"http://nlp.cs.unc.edu/models/{name}" for kind, name in WEIGHT_FILES.items()
}


@dataclass(frozen=True)
class Variant:
    """One feature set of vilio's `hm_feats.bash`: which weights, how many boxes."""

    name: str
    weights: WeightsKind
    min_boxes: int
    max_boxes: int


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vgattr3636", "attr", 36, 36),
        Variant("vgattr5050", "attr", 50, 50),
        Variant("vgattr7272", "attr", 72, 72),
        Variant("vgattr10100", "attr", 10, 100),
        Variant("vg5050", "plain", 50, 50),
        Variant("vg10100", "plain", 10, 100),
    )
}


@dataclass(frozen=True)
class BUTDConfig:
    # Input: BGR 0-255 minus the Caffe pixel mean (std 1), shortest side / longest side.
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    min_size: int = 600
    max_size: int = 1000
    # ResNet-101 C4: blocks in res2..res4 (res5 lives in the RoI head).
    stage_blocks: tuple[int, int, int] = (3, 4, 23)
    res5_blocks: int = 3
    stem_channels: int = 64
    res2_channels: int = 256
    frozen_bn_eps: float = 1e-5
    # RPN on res4 (stride 16).
    rpn_hidden: int = 512  # HID_CHANNELS 512: the VG model's RPN is narrower than res4 (1024)
    anchor_sizes: tuple[int, ...] = (64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    feature_stride: int = 16
    pre_nms_topk: int = 6000
    post_nms_topk: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 0.0  # proposals need width and height > this (input pixels)
    rpn_bbox_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # RoI head: RoIPool 14×14 at 1/16, res5 with stride 1 and dilation 2 (RES5HALVE False).
    pooler_resolution: int = 14
    num_classes: int = 1600  # + background as the LAST logit
    bbox_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    scale_clamp: float = math.log(1000.0 / 16)
    # Attribute head (attr weights only): class embedding 1601→256, 2304→512→401.
    attributes: bool = True
    num_attributes: int = 400
    attr_embed_dim: int = 256
    attr_hidden: int = 512

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.aspect_ratios)

    @property
    def res4_channels(self) -> int:
        return self.res2_channels * 4

    @property
    def feature_dim(self) -> int:
        return self.res2_channels * 8

    @classmethod
    def for_weights(cls, weights: WeightsKind) -> BUTDConfig:
        """The upstream detector for the attribute (`attr`) or plain (`plain`) checkpoint."""
        return cls(attributes=weights == "attr")

    def smoke(self) -> BUTDConfig:
        """The same layers with a small input and fewer, smaller RoIs, for the smoke profile.

        Every parameter shape stays full-size (the real loading path runs); only the input
        (shortest side 128, longest 213), the post-NMS proposals (100, enough for every
        variant's max_boxes) and the RoIPool grid (1×1: res5 then runs on one position per RoI
        instead of 196) shrink. Most of the cost at the full size is res5 on 300 × 196
        positions; this makes an image several hundred times cheaper (bench/RESULTS.md).
        """
        return replace(self, min_size=128, max_size=213, post_nms_topk=100, pooler_resolution=1)

    def tiny(self) -> BUTDConfig:
        """Narrow, shallow layers (feature dim 128, 20 classes) for fast unit tests."""
        return replace(
            self,
            stage_blocks=(1, 1, 1),
            res5_blocks=1,
            stem_channels=8,
            res2_channels=16,
            rpn_hidden=16,
            num_classes=20,
            num_attributes=10,
            attr_embed_dim=8,
            attr_hidden=16,
            min_size=128,
            max_size=200,
            post_nms_topk=60,
            pooler_resolution=7,
        )


__all__ = ["VARIANTS", "WEIGHT_FILES", "WEIGHT_URLS", "BUTDConfig", "Variant", "WeightsKind"]
