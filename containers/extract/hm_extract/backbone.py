"""ResNet-101 C4 backbone (stem + res2..res4) with Caffe's max-pool and frozen batch norm.

Module and attribute names follow detectron2's checkpoint keys (`stem.conv1.norm.weight`,
`res4.22.conv2.weight`), so the loader's rename table is the identity here.

Batches of images of different sizes are zero-padded to a common size. To make a batched run
give exactly the outputs of single-image runs, every spatially mixing layer (the stem max-pool,
each 3×3 conv, the RPN conv and RoIPool) sees zeros outside each image's valid extent, as an
unpadded run would see conv padding or nothing: `mask_padding` zeroes those regions, and each
layer's valid extent is computed from its geometry (`conv_out`). The inputs of these layers
are post-ReLU (≥ 0), so zeros there also leave max-pooling unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from hm_extract.config import BUTDConfig

Sizes = list[tuple[int, int]]  # valid (height, width) of each image of a batch


def conv_out(
    size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output length of a conv / pool along one axis (PyTorch's formula)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + padding:  # the last window must start inside the input
        out -= 1
    return out


def layer_sizes(sizes: Sizes, layer: nn.Conv2d) -> Sizes:
    def axis(n: int, i: int) -> int:
        return conv_out(
            n, layer.kernel_size[i], layer.stride[i], layer.padding[i], layer.dilation[i]
        )

    return [(axis(h, 0), axis(w, 1)) for h, w in sizes]


def mask_padding(x: Tensor, sizes: Sizes) -> Tensor:
    """Zero `x` (B, C, H, W) outside each image's valid (h, w); a no-op without padding."""
    height, width = x.shape[-2:]
    if all(h >= height and w >= width for h, w in sizes):
        return x
    x = x.clone()
    for i, (h, w) in enumerate(sizes):
        x[i, :, h:, :] = 0
        x[i, :, :, w:] = 0
    return x


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by frozen BN: detectron2's `Conv2d(norm=...)` key layout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=False,
        )
        self.norm = FrozenBatchNorm2d(out_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class BUTDStem(nn.Module):
    def __init__(self, out_channels: int = 64, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, 7, stride=2, padding=3, eps=eps)

    def forward(self, x: Tensor, sizes: Sizes) -> tuple[Tensor, Sizes]:
        x = F.relu(self.conv1(x))
        sizes = layer_sizes(sizes, self.conv1)
        x = mask_padding(x, sizes)
        # Caffe's max-pool: pad 0, ceil mode (CAFFE_MAXPOOL True).
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
        sizes = [
            (conv_out(h, 3, 2, 0, ceil_mode=True), conv_out(w, 3, 2, 0, ceil_mode=True))
            for h, w in sizes
        ]
        return x, sizes


class BUTDBottleneck(nn.Module):
    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.shortcut = (
            ConvNorm(in_channels, out_channels, 1, stride=stride, eps=eps)
            if in_channels != out_channels
            else None
        )
        # STRIDE_IN_1X1: the stride sits in the first 1×1 conv (Caffe/MSRA ResNet).
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride, eps=eps)
        self.conv2 = ConvNorm(
            bottleneck_channels,
            bottleneck_channels,
            3,
            padding=dilation,
            dilation=dilation,
            eps=eps,
        )
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, eps=eps)

    def forward(self, x: Tensor, sizes: Sizes) -> tuple[Tensor, Sizes]:
        out = F.relu(self.conv1(x))
        sizes = layer_sizes(sizes, self.conv1)
        out = F.relu(self.conv2(mask_padding(out, sizes)))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut), sizes


class BUTDStage(nn.Sequential):
    """Blocks of one ResNet stage; keys `<stage>.<i>.*` as upstream."""

    def forward(self, x: Tensor, sizes: Sizes) -> tuple[Tensor, Sizes]:  # type: ignore[override]
        for block in self:
            x, sizes = block(x, sizes)
        return x, sizes


def make_stage(
    num_blocks: int,
    in_channels: int,
    bottleneck_channels: int,
    out_channels: int,
    first_stride: int,
    dilation: int = 1,
    eps: float = 1e-5,
) -> BUTDStage:
    blocks = []
    for i in range(num_blocks):
        blocks.append(
            BUTDBottleneck(
                in_channels,
                bottleneck_channels,
                out_channels,
                stride=first_stride if i == 0 else 1,
                dilation=dilation,
                eps=eps,
            )
        )
        in_channels = out_channels
    return BUTDStage(*blocks)


class BUTDBackbone(nn.Module):
    def __init__(self, config: BUTDConfig) -> None:
        super().__init__()
        eps = config.frozen_bn_eps
        self.stem = BUTDStem(config.stem_channels, eps=eps)
        in_channels, width, out = config.stem_channels, config.stem_channels, config.res2_channels
        for index, num_blocks in enumerate(config.stage_blocks):
            stage = make_stage(
                num_blocks, in_channels, width, out, first_stride=1 if index == 0 else 2, eps=eps
            )
            self.add_module(f"res{index + 2}", stage)
            in_channels, width, out = out, width * 2, out * 2

    def forward(self, images: Tensor, sizes: Sizes) -> tuple[Tensor, Sizes]:
        """Res4 features of a padded batch.

        Args:
            images (Tensor[B, 3, H, W]): normalised BGR images, zero-padded bottom/right.
            sizes: the valid (h, w) of each image in `images`.

        Returns:
            (Tensor[B, 1024, H', W'], sizes'): res4 features (stride 16), zero outside each
            image's valid extent, and those extents.
        """
        x, sizes = self.stem(images, sizes)
        x, sizes = self.res2(x, sizes)
        x, sizes = self.res3(x, sizes)
        x, sizes = self.res4(x, sizes)
        return mask_padding(x, sizes), sizes


def init_random(module: nn.Module, generator: torch.Generator) -> None:
    """Deterministic random init in detectron2's manner (MSRA fill for convs).

    The last BN of each residual branch gets a small scale (0.2) so that activations stay
    bounded through 33 frozen-BN blocks and the random detector still yields sensible boxes.
    """
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            fan_out = sub.out_channels * sub.kernel_size[0] * sub.kernel_size[1]
            with torch.no_grad():
                sub.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
                if sub.bias is not None:
                    sub.bias.zero_()
        if isinstance(sub, FrozenBatchNorm2d):
            sub.weight.fill_(0.2 if name.endswith("conv3.norm") else 1.0)
            sub.bias.zero_()
            sub.running_mean.zero_()
            sub.running_var.fill_(1.0)


__all__ = [
    "BUTDBackbone",
    "BUTDBottleneck",
    "BUTDStem",
    "ConvNorm",
    "Sizes",
    "conv_out",
    "init_random",
    "layer_sizes",
    "make_stage",
    "mask_padding",
]
