from dataclasses import replace

from hm_extract.config import VARIANTS, WEIGHT_FILES, WEIGHT_URLS, BUTDConfig
from hm_extract.detector import BUTDDetector


def test_upstream_constants() -> None:
    cfg = BUTDConfig()
    assert cfg.pixel_mean == (102.9801, 115.9465, 122.7717)
    assert (cfg.min_size, cfg.max_size) == (600, 1000)
    assert cfg.num_anchors == 12
    assert (cfg.pre_nms_topk, cfg.post_nms_topk, cfg.rpn_nms_thresh) == (6000, 300, 0.7)
    assert cfg.feature_dim == 2048 and cfg.res4_channels == 1024
    assert cfg.bbox_weights == (10.0, 10.0, 5.0, 5.0)


def test_variants_match_upstream_feature_sets() -> None:
    assert {v.name: (v.weights, v.min_boxes, v.max_boxes) for v in VARIANTS.values()} == {
        "vgattr3636": ("attr", 36, 36),
        "vgattr5050": ("attr", 50, 50),
        "vgattr7272": ("attr", 72, 72),
        "vgattr10100": ("attr", 10, 100),
        "vg5050": ("plain", 50, 50),
        "vg10100": ("plain", 10, 100),
    }
    assert WEIGHT_URLS["attr"] == "http://nlp.cs.unc.edu/models/faster_rcnn_from_caffe_attr.pkl"
    assert WEIGHT_FILES["plain"] == "faster_rcnn_from_caffe.pkl"


def test_smoke_keeps_every_parameter_shape() -> None:
    full = BUTDDetector(BUTDConfig()).state_dict()
    smoke = BUTDDetector(BUTDConfig().smoke()).state_dict()
    assert {k: v.shape for k, v in full.items()} == {k: v.shape for k, v in smoke.items()}
    assert BUTDConfig().smoke().min_size < 600


def test_plain_weights_have_no_attribute_head() -> None:
    plain = BUTDDetector(replace(BUTDConfig.for_weights("plain").tiny()))
    assert plain.attribute_head is None
    assert not any(k.startswith("attribute_head") for k in plain.state_dict())
    assert BUTDDetector(BUTDConfig().tiny()).attribute_head is not None
