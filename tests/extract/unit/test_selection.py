import numpy as np
import pytest
import torch
from torch.testing import assert_close

from hm_extract.detector import RawDetections
from hm_extract.selection import NMS_THRESHOLDS, fixed_number_nms, select_regions


def test_thresholds_are_upstream_arange() -> None:
    assert tuple(float(t) for t in np.arange(0.3, 1.0, 0.1)) == NMS_THRESHOLDS
    assert len(NMS_THRESHOLDS) == 7 and NMS_THRESHOLDS[0] == 0.3


def _chain(n: int, step: float) -> torch.Tensor:
    """n boxes 10 wide, each shifted `step` from the previous (IoU grows as step shrinks)."""
    x = torch.arange(n, dtype=torch.float32) * step
    return torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)


def test_min_boxes_loosens_the_threshold_until_reached() -> None:
    boxes = _chain(20, 2.0)  # neighbours IoU 8/12 = 0.67: survive only from NMS 0.7 up
    scores = torch.linspace(1.0, 0.1, 20)
    tight = fixed_number_nms(boxes, scores, 1, 100)  # 0.3 already gives ≥ 1
    loose = fixed_number_nms(boxes, scores, 20, 100)  # needs 0.7
    assert len(tight) < 20 and len(loose) == 20
    assert loose.tolist() == list(range(20))  # score order


def test_max_boxes_caps_the_count() -> None:
    boxes = _chain(30, 30.0)  # disjoint: all survive every threshold
    scores = torch.rand(30, generator=torch.Generator().manual_seed(0))
    keep = fixed_number_nms(boxes, scores, 10, 12)
    assert len(keep) == 12
    assert_close(scores[keep], scores.sort(descending=True).values[:12])


def test_fallback_keeps_the_09_result_below_min_boxes() -> None:
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(5, 1)  # identical: one survives
    scores = torch.tensor([0.1, 0.5, 0.9, 0.2, 0.3])
    assert fixed_number_nms(same, scores, 3, 10).tolist() == [2]
    assert fixed_number_nms(torch.zeros(0, 4), torch.zeros(0), 10, 100).tolist() == []


def _detections(attrs: bool = True) -> RawDetections:
    """3 proposals, 4 classes (+ background), input 100×200 (h, w)."""
    logits = torch.tensor(
        [
            [0.0, 3.0, 0.0, 0.0, 9.0],  # background best, then class 1
            [2.0, 0.0, 0.0, 0.0, 0.0],  # class 0
            [0.0, 0.0, 0.0, 4.0, 0.0],  # class 3
        ]
    )
    class_boxes = torch.zeros(3, 4, 4)
    class_boxes[0, 1] = torch.tensor([10.0, 10.0, 50.0, 50.0])
    class_boxes[1, 0] = torch.tensor([120.0, 20.0, 260.0, 90.0])  # sticks out right: clipped
    class_boxes[2, 3] = torch.tensor([150.0, 60.0, 190.0, 95.0])
    attr_logits = torch.tensor(
        [[0.0, 5.0, 0.0, 99.0], [4.0, 0.0, 0.0, 99.0], [0.0, 0.0, 6.0, 99.0]]
    )  # last column must be ignored
    return RawDetections(
        image_size=(100, 200),
        proposals=torch.zeros(3, 4),
        features=torch.arange(3 * 8, dtype=torch.float32).view(3, 8),
        class_logits=logits,
        class_boxes=class_boxes,
        attr_logits=attr_logits if attrs else None,
    )


def test_select_regions_as_upstream() -> None:
    regions = select_regions(_detections(), original_size=(50, 400), min_boxes=1, max_boxes=10)
    probs = _detections().class_logits.softmax(-1)[:, :-1]
    order = probs.max(1).values.argsort(descending=True).tolist()
    assert regions.object_ids.tolist() == [[1, 0, 3][i] for i in order]
    assert_close(torch.from_numpy(regions.object_conf), probs.max(1).values[order])
    assert_close(torch.from_numpy(regions.features), _detections().features[order])
    # Boxes: clipped to the 100×200 input, then scaled ×2 in x and ×0.5 in y.
    expected = {
        1: [20.0, 5.0, 100.0, 25.0],
        0: [240.0, 10.0, 400.0, 45.0],
        3: [300.0, 30.0, 380.0, 47.5],
    }
    for box, cls in zip(regions.boxes.tolist(), regions.object_ids.tolist(), strict=True):
        assert box == pytest.approx(expected[cls])
    assert regions.attr_ids.tolist() == [[1, 0, 2][i] for i in order]
    assert (regions.attr_conf < 1).all() and (regions.attr_conf > 0.9).all()
    assert regions.boxes.dtype == np.float32 and regions.object_ids.dtype == np.int64


def test_select_regions_plain_weights_give_zero_attributes() -> None:
    regions = select_regions(_detections(attrs=False), (100, 200), 1, 10)
    assert (regions.attr_ids == 0).all() and (regions.attr_conf == 0).all()
    assert regions.attr_ids.dtype == np.int64 and len(regions.attr_ids) == 3


def test_empty_box_is_dropped_from_every_array() -> None:
    det = _detections()
    det.class_boxes[2, 3] = torch.tensor([210.0, 60.0, 250.0, 95.0])  # outside: clips to width 0
    regions = select_regions(det, original_size=(100, 200), min_boxes=1, max_boxes=10)
    assert len(regions.boxes) == 2 and 3 not in regions.object_ids.tolist()
    assert regions.features.shape == (2, 8)
    kept = [{1: 0, 0: 1}[c] for c in regions.object_ids.tolist()]
    assert_close(torch.from_numpy(regions.features), det.features[kept])
    assert len(regions.attr_ids) == len(regions.object_conf) == 2
