"""Region proposal network on res4, test-time only (detectron2 `StandardRPNHead` + `RPN`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image, nms

from hm_extract.backbone import Sizes
from hm_extract.config import BUTDConfig


def apply_deltas(
    deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float], scale_clamp: float
) -> Tensor:
    """detectron2's `Box2BoxTransform.apply_deltas`.

    Args:
        deltas (Tensor[N, k*4]): (dx, dy, dw, dh) per box, k box sets (class-specific or 1).
        boxes (Tensor[N, 4]): x1, y1, x2, y2 in input pixels.

    Returns:
        Tensor[N, k*4]: decoded boxes x1, y1, x2, y2.
    """
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    # Clamp before exp so a wild prediction cannot overflow (log(1000/16) upstream).
    dw = torch.clamp(deltas[:, 2::4] / ww, max=scale_clamp)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=scale_clamp)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    corners = (
        pred_ctr_x - 0.5 * pred_w,
        pred_ctr_y - 0.5 * pred_h,
        pred_ctr_x + 0.5 * pred_w,
        pred_ctr_y + 0.5 * pred_h,
    )
    return torch.stack(corners, dim=2).reshape(deltas.shape)  # (N, k*4)


def nonempty(boxes: Tensor, threshold: float = 0.0) -> Tensor:
    """Mask of boxes whose sides are both longer than `threshold` (detectron2 `nonempty`)."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def cell_anchors(sizes: tuple[int, ...], aspect_ratios: tuple[float, ...]) -> Tensor:
    """(len(sizes) * len(ratios), 4) anchors centred on 0, size-major (detectron2 order)."""
    anchors = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:  # ratio = height / width
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


class BUTDRPNHead(nn.Module):
    def __init__(self, in_channels: int, hidden: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)  # (B, A, H, W), (B, 4A, H, W)


class BUTDRPN(nn.Module):
    def __init__(self, config: BUTDConfig, head: BUTDRPNHead | None = None) -> None:
        super().__init__()
        self.config = config
        if head is None:
            head = BUTDRPNHead(config.res4_channels, config.rpn_hidden, config.num_anchors)
        self.head = head
        # Persistent so that a checkpoint carrying detectron2's cell anchors is checked
        # against ours (loader); the values come from the config.
        self.register_buffer(
            "cell_anchors", cell_anchors(config.anchor_sizes, config.aspect_ratios)
        )

    def grid_anchors(self, height: int, width: int) -> Tensor:
        """Anchors of an (height, width) grid, ordered (y, x, anchor) like the head outputs."""
        stride = self.config.feature_stride
        device = self.cell_anchors.device
        ys = torch.arange(height, device=device, dtype=torch.float32) * stride
        xs = torch.arange(width, device=device, dtype=torch.float32) * stride
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)  # (H*W*A, 4)

    def forward(
        self, features: Tensor, feature_sizes: Sizes, image_sizes: Sizes
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Proposals of each image, best objectness first.

        Args:
            features (Tensor[B, 1024, H, W]): res4 features, zero outside each valid extent.
            feature_sizes: valid (h, w) of each image's feature map.
            image_sizes: (h, w) of each resized input image, to clip proposals.

        Returns:
            (boxes, logits): per image Tensor[P_i, 4] (x1, y1, x2, y2 in input pixels,
            P_i ≤ post_nms_topk) and Tensor[P_i] objectness logits.
        """
        cfg = self.config
        logits, deltas = self.head(features)
        num_anchors = logits.shape[1]
        boxes_out, logits_out = [], []
        for i, ((fh, fw), image_size) in enumerate(zip(feature_sizes, image_sizes, strict=True)):
            # Only the valid grid: anchors over the padding would not exist in a single run.
            scores = logits[i, :, :fh, :fw].permute(1, 2, 0).reshape(-1)  # (H*W*A,)
            offsets = deltas[i].view(num_anchors, 4, *deltas.shape[-2:])[:, :, :fh, :fw]
            offsets = offsets.permute(2, 3, 0, 1).reshape(-1, 4)  # (H*W*A, 4)
            scores, order = scores.sort(descending=True, stable=True)
            order = order[: cfg.pre_nms_topk]
            scores = scores[: cfg.pre_nms_topk]
            anchors = self.grid_anchors(fh, fw)[order]
            boxes = apply_deltas(offsets[order], anchors, cfg.rpn_bbox_weights, cfg.scale_clamp)
            boxes = clip_boxes_to_image(boxes, image_size)
            keep = nonempty(boxes, cfg.rpn_min_size)
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, cfg.rpn_nms_thresh)[: cfg.post_nms_topk]
            boxes_out.append(boxes[keep])
            logits_out.append(scores[keep])
        return boxes_out, logits_out


__all__ = ["BUTDRPN", "BUTDRPNHead", "apply_deltas", "cell_anchors", "nonempty"]
