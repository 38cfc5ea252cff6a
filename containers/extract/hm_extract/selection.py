"""Box selection of vilio's extraction script ("fixed-number NMS", reference/models.md §7).

For each proposal: its best non-background class (softmax, background column dropped) and that
class's regressed box, clipped to the input. Class-agnostic NMS at 0.3, 0.4, … 0.9 until at
least `min_boxes` survive, at most `max_boxes` kept (the 0.9 result when none reaches
`min_boxes`). No score threshold (upstream passes one and ignores it). Features are those of
the kept proposals (pooled before regression); boxes are rescaled to the original image and
clipped.

One departure: upstream drops boxes that become empty after rescaling from the boxes and
object/attribute arrays but not from the features (the "1 in 10K rows holds N+1 features" of
its readers); here such a box is dropped from every array, so rows always line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import clip_boxes_to_image, nms

from hm_extract.detector import RawDetections
from hm_extract.rpn import nonempty

# np.arange, not a rounded list: upstream's thresholds are 0.6000000000000001 etc.
NMS_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.3, 1.0, 0.1))


@dataclass(frozen=True)
class SelectedRegions:
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in original-image pixels
    features: np.ndarray  # (N, 2048) float32
    object_ids: np.ndarray  # (N,) int64, 0..num_classes-1
    object_conf: np.ndarray  # (N,) float32
    attr_ids: np.ndarray  # (N,) int64, 0..num_attributes-1 (zeros without attributes)
    attr_conf: np.ndarray  # (N,) float32 (zeros without attributes)


def fixed_number_nms(
    boxes: torch.Tensor, scores: torch.Tensor, min_boxes: int, max_boxes: int
) -> torch.Tensor:
    """Indices kept: the loosest-needed of NMS 0.3…0.9 reaching `min_boxes`, at most `max_boxes`.

    >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    >>> fixed_number_nms(b, torch.tensor([0.9, 0.8, 0.7]), 1, 2).tolist()
    [0, 2]
    >>> fixed_number_nms(b, torch.tensor([0.9, 0.8, 0.7]), 3, 3).tolist()
    [0, 1, 2]
    """
    keep = boxes.new_zeros(0, dtype=torch.int64)
    for thresh in NMS_THRESHOLDS:
        keep = nms(boxes, scores, thresh)[:max_boxes]
        if len(keep) >= min_boxes:
            break
    return keep


def select_regions(
    det: RawDetections, original_size: tuple[int, int], min_boxes: int, max_boxes: int
) -> SelectedRegions:
    """The regions of one image as upstream stores them.

    Args:
        det: the detector's output for the image (`BUTDDetector.forward`).
        original_size: (height, width) of the image file, to rescale boxes to.
        min_boxes, max_boxes: the variant's box counts (36/36, 10/100, …).
    """
    num_proposals = det.class_boxes.shape[0]
    scores = det.class_logits.softmax(dim=-1)[:, :-1]  # (P, C): background column dropped
    object_conf, object_ids = scores.max(dim=1)  # (P,), (P,)
    boxes = det.class_boxes[torch.arange(num_proposals, device=scores.device), object_ids]
    boxes = clip_boxes_to_image(boxes, det.image_size)  # (P, 4)
    keep = fixed_number_nms(boxes, object_conf, min_boxes, max_boxes)

    height, width = original_size
    scale_y, scale_x = height / det.image_size[0], width / det.image_size[1]
    scale = boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    out_boxes = clip_boxes_to_image(boxes[keep] * scale, (height, width))
    keep = keep[nonempty(out_boxes)]
    out_boxes = out_boxes[nonempty(out_boxes)]

    if det.attr_logits is not None:
        attr_probs = det.attr_logits[keep, :-1].softmax(dim=-1)  # last column dropped
        attr_conf, attr_ids = attr_probs.max(dim=-1)
    else:
        attr_conf = scores.new_zeros(len(keep))
        attr_ids = keep.new_zeros(len(keep))

    def numpy(t: torch.Tensor, dtype: type) -> np.ndarray:
        return t.detach().cpu().numpy().astype(dtype, copy=False)

    return SelectedRegions(
        boxes=numpy(out_boxes, np.float32).reshape(-1, 4),
        features=numpy(det.features[keep], np.float32).reshape(len(keep), det.features.shape[1]),
        object_ids=numpy(object_ids[keep], np.int64),
        object_conf=numpy(object_conf[keep], np.float32),
        attr_ids=numpy(attr_ids, np.int64),
        attr_conf=numpy(attr_conf, np.float32),
    )


__all__ = ["NMS_THRESHOLDS", "SelectedRegions", "fixed_number_nms", "select_regions"]
