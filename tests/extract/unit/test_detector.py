import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from hm_extract.config import BUTDConfig
from hm_extract.detector import BUTDDetector, random_detector, resized_size
from hm_extract.selection import select_regions
from hm_extract.weights import dumps_upstream, load_state, read_upstream


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((37, 251), (147, 1000)),  # longest side caps the scale
        ((600, 800), (600, 800)),
        ((300, 400), (600, 800)),
        ((1000, 500), (1000, 500)),
        ((400, 300), (800, 600)),
    ],
)
def test_resized_size_is_resize_shortest_edge(size, expected) -> None:
    assert resized_size(*size, 600, 1000) == expected


def test_preprocess_gives_bgr_floats_at_input_size(tiny_attr) -> None:
    image = Image.new("RGB", (90, 120), (10, 20, 30))  # PIL size is (width, height)
    tensor = tiny_attr.transform.preprocess(image)
    h, w = resized_size(120, 90, tiny_attr.config.min_size, tiny_attr.config.max_size)
    assert tensor.shape == (3, h, w) and tensor.dtype == torch.float32
    assert tensor[:, 5, 5].tolist() == [30.0, 20.0, 10.0]  # B, G, R


def test_outputs_per_image(tiny_attr, odd_images) -> None:
    cfg = tiny_attr.config
    detections = tiny_attr([tiny_attr.transform.preprocess(im) for im in odd_images])
    assert len(detections) == len(odd_images)
    for det in detections:
        p = len(det.proposals)
        assert 0 < p <= cfg.post_nms_topk
        assert det.features.shape == (p, cfg.feature_dim)
        assert det.class_logits.shape == (p, cfg.num_classes + 1)
        assert det.class_boxes.shape == (p, cfg.num_classes, 4)
        assert det.attr_logits is not None and det.attr_logits.shape == (p, cfg.num_attributes + 1)


def test_batch_equals_single_image_runs(tiny_attr, odd_images) -> None:
    tensors = [tiny_attr.transform.preprocess(im) for im in odd_images]
    batch = tiny_attr(tensors)
    for tensor, image, det in zip(tensors, odd_images, batch, strict=True):
        single = tiny_attr([tensor])[0]
        assert_close(det.proposals, single.proposals, rtol=1e-4, atol=1e-3)
        assert_close(det.features, single.features, rtol=1e-4, atol=1e-4)
        assert_close(det.class_logits, single.class_logits, rtol=1e-4, atol=1e-4)
        assert_close(det.attr_logits, single.attr_logits, rtol=1e-4, atol=1e-4)
        size = (image.height, image.width)
        a, b = select_regions(det, size, 10, 30), select_regions(single, size, 10, 30)
        assert_close(
            torch.from_numpy(a.features), torch.from_numpy(b.features), rtol=1e-4, atol=1e-4
        )
        assert (a.object_ids == b.object_ids).all() and (a.attr_ids == b.attr_ids).all()


def test_deterministic(odd_images) -> None:
    a = random_detector(BUTDConfig().tiny(), seed=3)
    b = random_detector(BUTDConfig().tiny(), seed=3)
    tensors = [a.transform.preprocess(im) for im in odd_images[:2]]
    for x, y in zip(a(tensors), b(tensors), strict=True):
        assert torch.equal(x.features, y.features) and torch.equal(x.proposals, y.proposals)


def test_zero_proposals_do_not_crash(odd_images) -> None:
    detector = random_detector(BUTDConfig().tiny(), seed=0)
    with torch.no_grad():  # every proposal pushed 1000 widths to the right: all clipped empty
        detector.rpn.head.anchor_deltas.bias.view(-1, 4)[:, 0] = 1e4
    image = odd_images[1]
    det = detector([detector.transform.preprocess(image)])[0]
    assert len(det.proposals) == 0 and det.features.shape == (0, detector.config.feature_dim)
    regions = select_regions(det, (image.height, image.width), 10, 100)
    assert regions.boxes.shape == (0, 4) and regions.features.shape == (0, 128)
    assert regions.object_ids.dtype == np.int64 and regions.attr_conf.dtype == np.float32


def test_injected_parts_are_used() -> None:
    cfg = BUTDConfig().tiny()
    donor = random_detector(cfg, seed=5)
    detector = BUTDDetector(cfg, backbone=donor.backbone, rpn=donor.rpn)
    assert detector.backbone is donor.backbone and detector.rpn is donor.rpn
    assert detector.roi_heads is not donor.roi_heads


@pytest.mark.slow
def test_full_size_detector_on_an_odd_image(full_attr, odd_images) -> None:
    """The real layer shapes end to end (smoke input size), through the upstream pickle."""
    detector = BUTDDetector(full_attr.config)
    load_state(detector, read_upstream(dumps_upstream(full_attr), "<mem>"), "<mem>")
    image = odd_images[0]  # 37×251
    det = detector.eval()([detector.transform.preprocess(image)])[0]
    regions = select_regions(det, (image.height, image.width), 36, 36)
    n = len(regions.boxes)
    assert 0 < n <= 36 and regions.features.shape == (n, 2048)
    assert (regions.object_ids < 1600).all() and (regions.attr_ids < 400).all()
    assert (regions.boxes[:, [0, 2]] <= 251).all() and (regions.boxes[:, [1, 3]] <= 37).all()
    assert (regions.boxes >= 0).all()
