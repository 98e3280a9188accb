"""Merlin's image trunk: an I3D-inflated ResNet-152 (``merlin.models.i3res.I3ResNet``), written from the
architecture description without torchvision's ImageNet download that Merlin's own constructor performs.

Blanket et al., "Merlin: A Vision Language Foundation Model for 3D Computed Tomography" (arXiv:2406.06512),
code StanfordMIMI/Merlin (MIT). Inflation of torchvision's ResNet-152 (v1.5: stride on the 3x3 convolution;
blocks 3-8-36-3; no convolution biases):

- stem: Conv3d(3 -> 64, kernel (3, 7, 7), stride (1, 2, 2), padding (1, 3, 3)), batch norm, ReLU,
  MaxPool3d(kernel 3, stride 2, padding 1);
- bottlenecks: 1x1x1 -> 3x3x3 (stride s in all three axes, padding 1) -> 1x1x1, shortcut 1x1x1 stride s;
- heads on the global average pool (2048): ``classifier`` (Conv3d 2048 -> 1692, the EHR phenotypes) and
  ``contrastive_head`` (Conv3d 2048 -> 512, the CLIP-style image embedding).

Input (n, 1, X, Y, Z) with the array in RAS order is permuted to (n, 1, Z, X, Y) and repeated to three
channels, as the release does. Output: the pooled 2048 features (``head="pool"``, Merlin's
``ImageEmbedding=True``), or the L2-normalised 512-d contrastive embedding (``head="contrastive"``, what
``Merlin()(image, text)[0]`` returns and TIB uses).
"""

from __future__ import annotations

import torch
from torch import nn

#: torchvision ResNet-152: blocks per stage.
LAYERS = (3, 8, 36, 3)


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv3d(cin, planes * 4, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class MerlinI3ResNet(nn.Module):
    """(n, 1, X, Y, Z) RAS -> (n, 2048) pooled features or (n, 512) L2-normalised contrastive embedding."""

    def __init__(self, head: str = "pool", classes: int = 1692) -> None:
        super().__init__()
        if head not in ("pool", "contrastive"):
            raise ValueError(f"head must be 'pool' or 'contrastive', got {head!r}")
        self.head = head
        self.conv1 = nn.Conv3d(3, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS)):
            stride = 1 if i == 0 else 2
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck3d(cin, planes, stride if b == 0 else 1))
                cin = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        # both heads are part of the released image encoder (and of the audit), whichever output is used
        self.classifier = nn.Conv3d(2048, classes, kernel_size=1)
        self.contrastive_head = nn.Conv3d(2048, 512, kernel_size=1)
        self.feature_dim = 2048 if head == "pool" else 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 1, 4, 2, 3)
        x = torch.cat((x, x, x), dim=1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        pooled = self.avgpool(x)
        if self.head == "pool":
            return pooled.flatten(start_dim=1)
        z = self.contrastive_head(pooled).flatten(start_dim=1)
        return z / z.norm(dim=-1, keepdim=True)
