"""The networks of the supervised-from-scratch baselines (:mod:`lesionbench.baselines.supervised_cnn`): a light
residual 3D CNN of MONAI blocks, and FMCIB's trunk from random initialisation."""

from __future__ import annotations

import torch
from torch import nn


class LightCNN(nn.Module):
    """A small residual 3D CNN (MONAI blocks): stem, two residual stages, global average pool.

    ``forward`` returns the pooled ``(n, channels[-1])`` features; the classifier head lives in
    :class:`SupervisedEncoder`, so the same module serves for features and predictions.
    """

    def __init__(
        self,
        in_channels: int = 2,
        channels: tuple[int, ...] = (16, 32, 64),
        *,
        subunits: int = 2,
        norm: str | None = "batch",
    ):
        from monai.networks.blocks import Convolution, ResidualUnit

        super().__init__()
        layers: list[nn.Module] = [
            Convolution(3, in_channels, channels[0], strides=2, kernel_size=3, norm=norm, act="prelu")
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers.append(
                ResidualUnit(3, c_in, c_out, strides=2, kernel_size=3, subunits=subunits, norm=norm, act="prelu")
            )
        layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResNet50Trunk(nn.Module):
    """FMCIB's trunk (MONAI 3D ResNet-50, widen 2, stride-2 stem), 4096-d pooled features."""

    def __init__(self) -> None:
        from monai.networks.nets import resnet50

        super().__init__()
        self.net = resnet50(
            pretrained=False,
            spatial_dims=3,
            n_input_channels=1,
            widen_factor=2,
            conv1_t_stride=2,
            feed_forward=False,
            bias_downsample=True,
        )
        self.out_features = 4096

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
