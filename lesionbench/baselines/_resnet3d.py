"""The FMCIB trunk (MONAI's 3D ResNet-50, widen factor 2) built from ``torch.nn`` alone.

Why not ``monai.networks.nets.resnet50`` itself: ``import monai`` imports every MONAI sub-package
(transforms, data, apps, ...), about 3 s of CPU on a 2-core machine and roughly a third of the
end-to-end time of ``lesionbench extract`` on 24 lesions, for one network class. This module is the
same network, layer for layer: the same module names (so the same 322 state-dict keys, in the same
order), the same layer hyper-parameters, the same operations in the same order in ``forward`` (so
bitwise-identical features) and the same construction order (so ``torch.manual_seed(s)`` gives the same
random weights as MONAI's constructor). ``tests/test_fmcib.py`` checks all three against MONAI.

Only the configuration FMCIB uses is covered: bottleneck blocks, shortcut type "B" (1x1 convolution
with bias + batch norm), ReLU, batch norm, max pooling after the stem, global average pooling, no
classifier (``feed_forward=False``).
"""

from __future__ import annotations

import torch
from torch import nn

#: MONAI's ``get_inplanes()``: the base widths of the four stages (multiplied by ``widen_factor``).
BASE_PLANES = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """MONAI ``ResNetBottleneck`` (expansion 4): 1x1 -> 3x3 (stride) -> 1x1 convolutions, residual add."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        # registration order = MONAI's (state-dict key order and random-initialisation order)
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.act(out)


class ResNet3d(nn.Module):
    """MONAI ``ResNet(block="bottleneck", shortcut_type="B", feed_forward=False)`` for 3D inputs:
    (n, C, D, H, W) -> (n, 4 * widen * 512) features after global average pooling."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        *,
        n_input_channels: int = 1,
        widen_factor: float = 2.0,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 2,
        bias_downsample: bool = True,
    ) -> None:
        super().__init__()
        planes = [int(p * widen_factor) for p in BASE_PLANES]
        self.in_planes = planes[0]
        self.bias_downsample = bias_downsample
        self.conv1 = nn.Conv3d(
            n_input_channels, self.in_planes, kernel_size=conv1_t_size, stride=conv1_t_stride, padding=conv1_t_size // 2, bias=False
        )
        self.bn1 = nn.BatchNorm3d(self.in_planes)
        self.act = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(planes[0], layers[0])
        self.layer2 = self._make_layer(planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = None
        # MONAI's initialisation, in module order (the same random draws after the same seed)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(torch.as_tensor(m.weight), mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(torch.as_tensor(m.weight), 1)
                nn.init.constant_(torch.as_tensor(m.bias), 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv3d(self.in_planes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=self.bias_downsample),
                nn.BatchNorm3d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.in_planes, planes, stride=stride, downsample=downsample)]
        self.in_planes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _max_pool(self.maxpool, self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return x.view(x.size(0), -1)


def _triple(v: int | tuple[int, ...]) -> list[int]:
    return [int(v)] * 3 if isinstance(v, int) else [int(u) for u in v]


def _max_pool(pool: nn.MaxPool3d, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)``, through oneDNN for float32 CPU inference: the same values bit for bit (a maximum is
    exact) about 3x faster, because ATen's CPU ``max_pool3d`` always computes the argmax indices too
    (~7% of a forward pass of the FMCIB trunk on 16 patches). Anything else goes to ``pool`` itself."""
    plain = _triple(pool.dilation) == [1, 1, 1] and not pool.ceil_mode and not pool.return_indices
    if plain and x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad and torch.backends.mkldnn.is_available():
        out = torch.mkldnn_max_pool3d(x.to_mkldnn(), _triple(pool.kernel_size), _triple(pool.stride), _triple(pool.padding))
        return out.to_dense()
    return pool(x)


def resnet50(**kwargs) -> ResNet3d:
    """MONAI's ``resnet50(pretrained=False, spatial_dims=3, feed_forward=False, **kwargs)``."""
    return ResNet3d((3, 4, 6, 3), **kwargs)

