"""RoI heads of the C4 detector: RoIPool + res5 + box predictor, and the attribute head.

detectron2's `Res5ROIHeads` with `RES5HALVE False` (res5 keeps 14×14: stride 1, dilation 2)
and `FastRCNNOutputLayers`; the attribute layers, which upstream keeps inside the box
predictor, are a module of their own here (`BUTDAttributeHead`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import RoIPool

from hm_extract.backbone import make_stage
from hm_extract.config import BUTDConfig
from hm_extract.rpn import apply_deltas


@dataclass
class RoIOutputs:
    features: Tensor  # (R, 2048) mean-pooled res5 feature per proposal
    class_logits: Tensor  # (R, num_classes + 1), background last
    class_boxes: Tensor  # (R, num_classes, 4) regressed box per class, input pixels


class BUTDBoxPredictor(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class BUTDAttributeHead(nn.Module):
    def __init__(self, config: BUTDConfig) -> None:
        super().__init__()
        dim = config.feature_dim
        self.cls_embedding = nn.Embedding(config.num_classes + 1, config.attr_embed_dim)
        self.fc_attr = nn.Linear(dim + config.attr_embed_dim, config.attr_hidden)
        self.attr_score = nn.Linear(config.attr_hidden, config.num_attributes + 1)

    def forward(self, features: Tensor, class_logits: Tensor) -> Tensor:
        """Attribute logits.

        Args:
            features (Tensor[R, 2048]): pooled RoI features.
            class_logits (Tensor[R, C + 1]): the class whose embedding is used is the argmax,
                background included (as upstream).

        Returns:
            Tensor[R, num_attributes + 1]: logits; the last column is dropped at selection.
        """
        embedded = self.cls_embedding(class_logits.argmax(dim=-1))  # (R, 256)
        x = torch.cat([features, embedded], dim=-1)  # (R, 2304)
        return self.attr_score(F.relu(self.fc_attr(x)))


class BUTDRoIHeads(nn.Module):
    def __init__(self, config: BUTDConfig, box_predictor: BUTDBoxPredictor | None = None) -> None:
        super().__init__()
        self.config = config
        res = config.pooler_resolution
        self.pooler = RoIPool((res, res), spatial_scale=1.0 / config.feature_stride)
        # RES5HALVE False: block 0 keeps stride 1 and every 3×3 conv has dilation 2.
        self.res5 = make_stage(
            config.res5_blocks,
            config.res4_channels,
            config.res2_channels * 2,
            config.feature_dim,
            first_stride=1,
            dilation=2,
            eps=config.frozen_bn_eps,
        )
        if box_predictor is None:
            box_predictor = BUTDBoxPredictor(config.feature_dim, config.num_classes)
        self.box_predictor = box_predictor

    def forward(self, features: Tensor, proposals: list[Tensor]) -> RoIOutputs:
        """Per-proposal features, class logits and class-specific boxes, all images together.

        Args:
            features (Tensor[B, 1024, H, W]): res4 features, zero outside each valid extent.
            proposals: per image Tensor[P_i, 4], x1, y1, x2, y2 in input pixels.

        Returns:
            RoIOutputs over R = sum(P_i) proposals, in image order.
        """
        cfg = self.config
        rois = torch.cat(
            [
                torch.cat([torch.full_like(boxes[:, :1], i), boxes], dim=1)
                for i, boxes in enumerate(proposals)
            ]
        )  # (R, 5): batch index, x1, y1, x2, y2
        pooled = self.pooler(features, rois)  # (R, 1024, res, res)
        res = cfg.pooler_resolution
        x, _ = self.res5(pooled, [(res, res)] * pooled.shape[0])  # (R, 2048, res, res)
        pooled_features = x.mean(dim=(2, 3))  # (R, 2048)
        class_logits, deltas = self.box_predictor(pooled_features)
        boxes = apply_deltas(deltas, rois[:, 1:], cfg.bbox_weights, cfg.scale_clamp)
        return RoIOutputs(
            pooled_features, class_logits, boxes.view(-1, cfg.num_classes, 4)
        )  # (R, C, 4)


__all__ = ["BUTDAttributeHead", "BUTDBoxPredictor", "BUTDRoIHeads", "RoIOutputs"]
