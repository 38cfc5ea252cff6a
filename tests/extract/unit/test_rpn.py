import math

import torch
from torch.testing import assert_close

from hm_extract.config import BUTDConfig
from hm_extract.detector import random_detector
from hm_extract.rpn import apply_deltas, cell_anchors, nonempty


def test_cell_anchors_size_major_detectron2_order() -> None:
    anchors = cell_anchors((64, 128, 256, 512), (0.5, 1.0, 2.0))
    assert anchors.shape == (12, 4)
    w = math.sqrt(64 * 64 / 0.5)
    assert_close(anchors[0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))  # 64, ratio 0.5
    assert_close(anchors[4], torch.tensor([-64.0, -64.0, 64.0, 64.0]))  # 128, ratio 1
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    assert_close(
        widths * heights,
        torch.tensor([s * s for s in (64, 128, 256, 512) for _ in range(3)], dtype=torch.float32),
    )


def test_apply_deltas_identity_shift_and_clamp() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    weights = (10.0, 10.0, 5.0, 5.0)
    assert_close(apply_deltas(torch.zeros(1, 8), boxes, weights, 4.0), boxes.repeat(1, 2))
    moved = apply_deltas(torch.tensor([[10.0, 0.0, 0.0, 0.0]]), boxes, weights, 4.0)
    assert_close(moved, torch.tensor([[30.0, 20.0, 50.0, 60.0]]))  # dx = 1 box width
    huge = apply_deltas(torch.tensor([[0.0, 0.0, 1e4, 0.0]]), boxes, weights, math.log(1000 / 16))
    assert_close(huge[0, 2] - huge[0, 0], torch.tensor(20.0 * 1000 / 16))


def test_nonempty() -> None:
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 5.0, 3.0], [0.0, 2.0, 4.0, 2.0]])
    assert nonempty(boxes).tolist() == [True, False, False]


def test_grid_anchors_follow_the_head_layout() -> None:
    rpn = random_detector(BUTDConfig().tiny(), seed=0).rpn
    grid = rpn.grid_anchors(2, 3)  # (y, x, anchor)
    assert grid.shape == (2 * 3 * 12, 4)
    centre = (grid[:, :2] + grid[:, 2:]) / 2
    index = (1 * 3 + 2) * 12 + 5  # y = 1, x = 2, anchor 5
    assert_close(centre[index], torch.tensor([32.0, 16.0]))


def test_proposals_inside_image_sorted_and_capped(tiny_attr, odd_images) -> None:
    detector = tiny_attr
    for image in odd_images:
        tensor = detector.transform.preprocess(image)
        batch = detector.transform([tensor])
        with torch.no_grad():
            feats, sizes = detector.backbone(batch.tensor, batch.image_sizes)
            boxes, logits = detector.rpn(feats, sizes, batch.image_sizes)
        h, w = batch.image_sizes[0]
        assert 0 < len(boxes[0]) <= detector.config.post_nms_topk
        assert (boxes[0][:, 0] >= 0).all() and (boxes[0][:, 2] <= w).all()
        assert (boxes[0][:, 1] >= 0).all() and (boxes[0][:, 3] <= h).all()
        assert nonempty(boxes[0]).all()
        assert (logits[0][:-1] >= logits[0][1:]).all()
