"""PASTA's encoder: nnU-Net's ``Generic_UNet`` contracting path as PASTA configures it, written from the
architecture's description (see :mod:`lesionbench.baselines.zoo.pasta` for the model card and recipes).

Base 64 features doubling per stage up to 1024, five stages (the first at full resolution, the others
starting with a stride-2 convolution: nnU-Net's convolutional pooling), two 3x3x3 conv -> InstanceNorm(affine,
eps 1e-5) -> LeakyReLU(0.01) units per stage, then the bottleneck: one stride-2 unit and one unit at 1024.
Parameter names are the released ones: ``conv_blocks_context.<stage>.blocks.<unit>.conv.weight``,
``...instnorm.weight``; the bottleneck is ``conv_blocks_context.5.{0,1}.blocks.0``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: Output channels of the five stages and the bottleneck.
STAGE_CHANNELS = (64, 128, 256, 512, 1024)
BOTTLENECK_CHANNELS = 1024
Layer = Literal["stage4", "bottleneck"]


class ConvNormNonlin(nn.Module):
    """3x3x3 conv (bias) -> InstanceNorm3d(affine, eps 1e-5) -> LeakyReLU(0.01); ``conv``, ``instnorm`` as released."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.instnorm = nn.InstanceNorm3d(out_channels, eps=1e-5, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.instnorm(self.conv(x)), negative_slope=1e-2)


class Stage(nn.Module):
    """``blocks``: ``n`` units, the first with ``stride`` (nnU-Net's convolutional pooling)."""

    def __init__(self, in_channels: int, out_channels: int, n: int, stride: int):
        super().__init__()
        units = [ConvNormNonlin(in_channels, out_channels, stride)] + [ConvNormNonlin(out_channels, out_channels) for _ in range(n - 1)]
        self.blocks = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class PastaEncoder(nn.Module):
    """PASTA's Generic_UNet contracting path; ``forward`` returns the global average pool of ``layer``:
    ``(n, 1, D, H, W)`` -> ``(n, 1024)``. Sides divisible by 16 (``stage4``) or 32 (``bottleneck``) keep the
    stride-2 grid aligned with the input (the released code pads to a multiple of 32)."""

    def __init__(self, layer: Layer = "stage4"):
        super().__init__()
        if layer not in ("stage4", "bottleneck"):
            raise ValueError(f"layer must be 'stage4' or 'bottleneck', got {layer!r}")
        self.layer = layer
        stages: list[nn.Module] = []
        in_ch = 1
        for d, out_ch in enumerate(STAGE_CHANNELS):
            stages.append(Stage(in_ch, out_ch, 2, stride=1 if d == 0 else 2))
            in_ch = out_ch
        stages.append(nn.Sequential(Stage(in_ch, BOTTLENECK_CHANNELS, 1, stride=2), Stage(BOTTLENECK_CHANNELS, BOTTLENECK_CHANNELS, 1, stride=1)))
        self.conv_blocks_context = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.conv_blocks_context if self.layer == "bottleneck" else self.conv_blocks_context[:-1]
        for block in blocks:
            x = block(x)
        return x.mean(dim=(2, 3, 4))
