import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from hm_extract.backbone import BUTDBackbone, conv_out, mask_padding
from hm_extract.config import BUTDConfig
from hm_extract.detector import random_detector


@pytest.mark.parametrize("size", [1, 4, 5, 37, 64, 251, 600, 1000])
def test_conv_out_matches_torch(size: int) -> None:
    x = torch.zeros(1, 1, size, 3)
    pooled = F.max_pool2d(x, 3, 2, 0, ceil_mode=True) if size >= 3 else None
    if pooled is not None:
        assert conv_out(size, 3, 2, 0, ceil_mode=True) == pooled.shape[2]
    conv = F.conv2d(x, torch.zeros(1, 1, 7, 1), stride=(2, 1), padding=(3, 0))
    assert conv_out(size, 7, 2, 3) == conv.shape[2]
    dilated = F.conv2d(x, torch.zeros(1, 1, 3, 1), padding=(2, 0), dilation=(2, 1))
    assert conv_out(size, 3, 1, 2, dilation=2) == dilated.shape[2]


def test_mask_padding_zeroes_outside_each_image() -> None:
    x = torch.ones(2, 3, 4, 5)
    out = mask_padding(x, [(4, 5), (2, 3)])
    assert out[0].sum() == 3 * 4 * 5
    assert out[1, :, :2, :3].sum() == 3 * 2 * 3 and out[1].sum() == 3 * 2 * 3
    assert x.sum() == 2 * 3 * 4 * 5  # the input is left alone
    assert mask_padding(x, [(4, 5), (4, 5)]) is x


def test_caffe_stem_and_layer_layout() -> None:
    backbone = BUTDBackbone(BUTDConfig())
    assert [len(getattr(backbone, f"res{i}")) for i in (2, 3, 4)] == [3, 4, 23]
    block = backbone.res3[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)  # stride in the 1×1
    assert block.shortcut is not None and backbone.res3[1].shortcut is None
    x = torch.randn(1, 3, 600, 1000)
    with torch.no_grad():
        out, sizes = backbone.stem(x, [(600, 1000)])
    assert tuple(out.shape[-2:]) == sizes[0] == (150, 250)  # ceil-mode pool, pad 0


def test_padded_batch_equals_single_images() -> None:
    detector = random_detector(BUTDConfig().tiny(), seed=1)
    images = [torch.rand(3, 37, 251) * 255, torch.rand(3, 120, 90) * 255]
    batch = detector.transform(images)
    with torch.no_grad():
        feats, sizes = detector.backbone(batch.tensor, batch.image_sizes)
        for i, image in enumerate(images):
            single = detector.transform([image])
            one, one_sizes = detector.backbone(single.tensor, single.image_sizes)
            h, w = one_sizes[0]
            assert sizes[i] == (h, w) == tuple(one.shape[-2:])
            assert_close(feats[i, :, :h, :w], one[0], rtol=1e-4, atol=1e-4)
            assert feats[i, :, h:, :].abs().sum() == 0 and feats[i, :, :, w:].abs().sum() == 0
