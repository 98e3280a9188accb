"""MedicalNet's (Med3D's) 3D ResNet trunk, written from the architecture the release describes.

Chen, Ma & Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis" (arXiv:1904.00625), code
Tencent/MedicalNet (MIT). The released checkpoints were trained with this network, which differs from
MONAI's ``monai.networks.nets.resnet*`` in three places although every weight has the same name and shape
(so MONAI's "MedicalNet pretrained" path loads them strictly and then computes another function):

- the stem convolution has stride 2 (MONAI's default ``conv1_t_stride`` is 1);
- ``layer3`` and ``layer4`` keep the resolution (stride 1) and dilate their 3x3x3 convolutions by 2 and 4
  (MONAI: stride 2, no dilation); the 1x1 shortcut convolutions of those stages have stride 1;
- the shortcut is type "A" (average pool + zero channels, no weights) for ResNet-18/34 and type "B"
  (1x1 convolution without bias + batch norm) for ResNet-10/50/101/152/200.

The segmentation head (``conv_seg``) is not built: the released files do not carry it (MONAI loads them
strictly into a head-less trunk), and the embedding is the global average of ``layer4``'s output.
Module names follow the release (``conv1``, ``bn1``, ``layerN.i.{conv1,bn1,conv2,bn2[,conv3,bn3],downsample.{0,1}}``)
so its state dict loads key for key.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: depth -> (block kind, blocks per stage, shortcut type), as the release's ``resnet{N}`` constructors and
#: the shortcut types its checkpoints were trained with (MONAI ``resnet_params`` records the same).
VARIANTS: dict[int, tuple[str, tuple[int, int, int, int], str]] = {
    10: ("basic", (1, 1, 1, 1), "B"),
    18: ("basic", (2, 2, 2, 2), "A"),
    34: ("basic", (3, 4, 6, 3), "A"),
    50: ("bottleneck", (3, 4, 6, 3), "B"),
}


def _conv3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two dilated 3x3x3 convolutions with batch norm and a residual add (expansion 1)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> dilated 3x3x3 (stride) -> 1x1 convolutions with batch norm and a residual add (expansion 4)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ShortcutA(nn.Module):
    """Type-A shortcut: subsample by ``stride`` and append zero channels up to ``planes`` (no weights)."""

    def __init__(self, planes: int, stride: int) -> None:
        super().__init__()
        self.planes = planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        pad = out.new_zeros((out.shape[0], self.planes - out.shape[1], *out.shape[2:]))
        return torch.cat([out, pad], dim=1)


class MedicalNetResNet(nn.Module):
    """(n, 1, D, H, W) -> (n, 512 * expansion): the MedicalNet trunk up to ``layer4``, globally averaged."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        kind, layers, shortcut = VARIANTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.shortcut_type = shortcut
        self.inplanes = 64
        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], shortcut)
        self.layer2 = self._make_layer(block, 128, layers[1], shortcut, stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], shortcut, dilation=2)
        self.layer4 = self._make_layer(block, 512, layers[3], shortcut, dilation=4)
        self.feature_dim = 512 * block.expansion
        for m in self.modules():  # the release's initialisation (what random-init controls start from)
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, shortcut: str, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample: nn.Module | None = None
        out_planes = planes * block.expansion
        if stride != 1 or self.inplanes != out_planes:
            if shortcut == "A":
                downsample = ShortcutA(out_planes, stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(out_planes)
                )
        layers = [block(self.inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)
