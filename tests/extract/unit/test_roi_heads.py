import torch
from torch.testing import assert_close

from hm_extract.config import BUTDConfig
from hm_extract.roi_heads import BUTDAttributeHead, BUTDRoIHeads


def test_res5_keeps_resolution_with_dilation() -> None:
    heads = BUTDRoIHeads(BUTDConfig())
    assert heads.res5[0].conv1.stride == (1, 1) and heads.res5[0].shortcut.stride == (1, 1)
    assert all(b.conv2.dilation == (2, 2) and b.conv2.padding == (2, 2) for b in heads.res5)
    assert heads.box_predictor.cls_score.out_features == 1601
    assert heads.box_predictor.bbox_pred.out_features == 6400


def test_roi_heads_shapes_per_proposal() -> None:
    cfg = BUTDConfig().tiny()
    heads = BUTDRoIHeads(cfg).eval()
    features = torch.rand(2, cfg.res4_channels, 6, 8)
    proposals = [
        torch.tensor([[0.0, 0.0, 50.0, 40.0], [10.0, 10.0, 90.0, 90.0]]),
        torch.zeros(0, 4),
    ]
    with torch.no_grad():
        out = heads(features, proposals)
    assert out.features.shape == (2, cfg.feature_dim)
    assert out.class_logits.shape == (2, cfg.num_classes + 1)
    assert out.class_boxes.shape == (2, cfg.num_classes, 4)


def test_attribute_head_embeds_argmax_class_background_included() -> None:
    cfg = BUTDConfig()
    head = BUTDAttributeHead(cfg).eval()
    features = torch.rand(2, 2048)
    logits = torch.zeros(2, 1601)
    logits[0, 1600] = 5.0  # background wins: its embedding is used, as upstream
    logits[1, 3] = 5.0
    with torch.no_grad():
        out = head(features, logits)
        expected = head.attr_score(
            torch.relu(
                head.fc_attr(
                    torch.cat([features, head.cls_embedding(torch.tensor([1600, 3]))], dim=-1)
                )
            )
        )
    assert out.shape == (2, 401)
    assert_close(out, expected)
