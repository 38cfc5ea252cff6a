"""The bottom-up-attention detector as a composition of injected modules (STYLE rule 4).

`BUTDDetector(backbone, rpn, roi_heads, attribute_head, transform)`; a part left None is built
from the `BUTDConfig`. The forward reads as the algorithm: normalise and pad → res4 → proposals
→ RoIPool + res5 + predictors → attributes. Box selection is `hm_extract.selection`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from hm_extract.backbone import BUTDBackbone, Sizes, init_random
from hm_extract.config import BUTDConfig
from hm_extract.roi_heads import BUTDAttributeHead, BUTDRoIHeads
from hm_extract.rpn import BUTDRPN


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 `ResizeShortestEdge`: shortest side → min_size unless longest > max_size.

    >>> resized_size(37, 251, 600, 1000)
    (147, 1000)
    """
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


@dataclass
class ImageBatch:
    tensor: Tensor  # (B, 3, H, W) normalised BGR, zero-padded bottom/right
    image_sizes: Sizes  # (h, w) of each resized image inside the padding


@dataclass
class RawDetections:
    """Everything box selection needs about one image's proposals (P of them)."""

    image_size: tuple[int, int]  # (h, w) of the resized input
    proposals: Tensor  # (P, 4) proposal boxes, input pixels
    features: Tensor  # (P, 2048) pooled features of the proposals
    class_logits: Tensor  # (P, num_classes + 1), background last
    class_boxes: Tensor  # (P, num_classes, 4) regressed boxes, input pixels
    attr_logits: Tensor | None  # (P, num_attributes + 1) or None without an attribute head


class BUTDTransform(nn.Module):
    """Resize (PIL bilinear, as upstream) on the CPU; mean subtraction and padding on device."""

    def __init__(self, config: BUTDConfig) -> None:
        super().__init__()
        self.config = config
        mean = torch.tensor(config.pixel_mean, dtype=torch.float32).view(3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)

    def preprocess(self, image: Image.Image) -> Tensor:
        """A decoded image → Tensor[3, h, w] float BGR 0-255 at the detector's input size."""
        rgb = image.convert("RGB")
        h, w = resized_size(rgb.height, rgb.width, self.config.min_size, self.config.max_size)
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
        bgr = np.asarray(rgb, dtype=np.float32)[:, :, ::-1]  # (h, w, 3) BGR as cv2 reads it
        return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))

    def forward(self, images: list[Tensor]) -> ImageBatch:
        """Normalise and pad a list of Tensor[3, h_i, w_i] (from `preprocess`)."""
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        batch = images[0].new_zeros((len(images), 3, height, width), device=self.pixel_mean.device)
        for i, image in enumerate(images):
            h, w = sizes[i]
            batch[i, :, :h, :w] = image.to(batch.device) - self.pixel_mean
        return ImageBatch(batch, sizes)


class BUTDDetector(nn.Module):
    def __init__(
        self,
        config: BUTDConfig | None = None,
        backbone: nn.Module | None = None,
        rpn: nn.Module | None = None,
        roi_heads: nn.Module | None = None,
        attribute_head: nn.Module | None = None,
        transform: BUTDTransform | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or BUTDConfig()
        self.transform = BUTDTransform(config) if transform is None else transform
        self.backbone = BUTDBackbone(config) if backbone is None else backbone
        self.rpn = BUTDRPN(config) if rpn is None else rpn
        self.roi_heads = BUTDRoIHeads(config) if roi_heads is None else roi_heads
        # Only the attribute checkpoint has these layers (config.attributes).
        if attribute_head is None and config.attributes:
            attribute_head = BUTDAttributeHead(config)
        self.attribute_head = attribute_head

    @torch.no_grad()
    def forward(self, images: list[Tensor]) -> list[RawDetections]:
        """Detect on a batch of images of any sizes.

        Args:
            images: Tensor[3, h_i, w_i] float BGR 0-255, already resized (`transform.preprocess`).

        Returns:
            One `RawDetections` per image; a batch gives the same values as single-image runs.
        """
        batch = self.transform(images)
        features, feature_sizes = self.backbone(batch.tensor, batch.image_sizes)
        proposals, _ = self.rpn(features, feature_sizes, batch.image_sizes)
        rois = self.roi_heads(features, proposals)
        attr_logits = (
            self.attribute_head(rois.features, rois.class_logits)
            if self.attribute_head is not None
            else None
        )
        counts = [len(p) for p in proposals]
        per_image = zip(
            rois.features.split(counts),
            rois.class_logits.split(counts),
            rois.class_boxes.split(counts),
            attr_logits.split(counts) if attr_logits is not None else [None] * len(counts),
            strict=True,
        )
        return [
            RawDetections(size, boxes, feats, logits, class_boxes, attrs)
            for size, boxes, (feats, logits, class_boxes, attrs) in zip(
                batch.image_sizes, proposals, per_image, strict=True
            )
        ]


def random_detector(config: BUTDConfig, seed: int = 0) -> BUTDDetector:
    """A full-size detector with deterministic random weights (the smoke profile's model).

    Heads get detectron2's initialisation (normal, std 0.01 / 0.001, zero biases), except the
    RPN's two output convs (std 0.001): untrained, they would otherwise move every proposal by
    a few box widths, and most would be clipped away.
    """
    generator = torch.Generator().manual_seed(seed)
    detector = BUTDDetector(config)
    init_random(detector, generator)
    with torch.no_grad():
        for name, module in detector.named_modules():
            if name.startswith("rpn.head.") and isinstance(module, nn.Conv2d):
                std = 0.01 if name.endswith(".conv") else 0.001
                module.weight.normal_(0.0, std, generator=generator)
            if isinstance(module, nn.Linear | nn.Embedding):
                std = 0.001 if name.endswith("bbox_pred") else 0.01
                module.weight.normal_(0.0, std, generator=generator)
                if isinstance(module, nn.Linear):
                    module.bias.zero_()
    return detector.eval()


__all__ = [
    "BUTDDetector",
    "BUTDTransform",
    "ImageBatch",
    "RawDetections",
    "random_detector",
    "resized_size",
]
