"""The UNet3D encoder of Models Genesis and SuPreM, written here from the architecture's description.

Zhou et al., "Models Genesis" (MedIA 2021) and Li et al., "SuPreM" (ICLR 2024) share one 3D U-Net
(MrGiovanni/ModelsGenesis ``pytorch/unet3d.py``; SuPreM ``backbone/unet.py``). Only the contracting path
is built: four ``DownTransition`` levels, each two ``LUConv`` units (3x3x3 conv with bias -> batch-norm
affine -> ReLU). Level ``d`` (0..3) has 32 * 2**d channels after its first unit and twice that after the
second (64, 128, 256, 512 out); levels 0-2 end in a 2x2x2 max pool, level 3 does not. The parameter
names are the released ones (``down_tr64.ops.0.conv1.weight``, ``down_tr64.ops.0.bn1.weight`` ...), so a
released state dict (after its container and prefix are unwrapped) loads strictly; the decoder
(``up_tr*``, ``out_tr*``) is not built, and the checkpoint keys that belong to it are listed as ignored
in each model's card.

The released normalisation (``ContBatchNorm3d``) calls ``F.batch_norm(..., training=True)`` even in eval
mode: every channel is normalised with the statistics of the whole batch, so a lesion's features depend
on which other lesions share its batch. :class:`PerSampleBatchNorm3d` keeps the released affine
parameters (``bn1.weight``, ``bn1.bias``) but normalises each sample with its own statistics: exactly the
released computation for a batch of one (which is how TumorImagingBench runs it), independent of the batch.
The release never reads its running statistics (``bn1.running_mean``, ``bn1.running_var``,
``bn1.num_batches_tracked``; the last is absent from files saved before PyTorch 0.4.1), so they are not
part of the network: the cards list them among the deliberately ignored checkpoint keys.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: Channels of each level's output (the level name is ``down_tr<channels>``).
LEVEL_CHANNELS = (64, 128, 256, 512)


class PerSampleBatchNorm3d(nn.Module):
    """``ContBatchNorm3d`` with per-sample statistics: batch norm in training mode applied to each sample
    alone, i.e. an instance norm with the batch norm's affine ``weight`` and ``bias`` (biased variance,
    eps 1e-5, as ``nn.BatchNorm3d``'s defaults in the release)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() != 5:
            raise ValueError(f"expected a 5D input (n, c, d, h, w), got {input.dim()}D")
        # instance_norm is batch_norm(training=True) over each (sample, channel) plane: the released
        # computation for a batch of one, for every sample at once
        return F.instance_norm(input, None, None, self.weight, self.bias, use_input_stats=True, eps=self.eps)


class LUConv(nn.Module):
    """3x3x3 convolution -> per-sample batch norm -> ReLU (``conv1``, ``bn1`` as released)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = PerSampleBatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class DownTransition(nn.Module):
    """Level ``depth``: two LUConv units (``ops.0``, ``ops.1``), then a 2x2x2 max pool unless it is the last level."""

    def __init__(self, in_channels: int, depth: int):
        super().__init__()
        mid = 32 * 2**depth
        self.ops = nn.Sequential(LUConv(in_channels, mid), LUConv(mid, 2 * mid))
        self.pool = depth < len(LEVEL_CHANNELS) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ops(x)
        return F.max_pool3d(out, 2) if self.pool else out


Pool = Literal["global", "fmcib"]


class UNet3DEncoder(nn.Module):
    """The contracting path and the embedding taken from its 512-channel map ``out512`` (1/8 of the input
    size; sides divisible by 8 keep every voxel through the released pooling).

    ``pool="global"``: global average pool -> 512 (the Models Genesis target-task example, ``TargetNet``,
    and SuPreM's encoder wrapper in TumorImagingBench). ``pool="fmcib"``: ``AvgPool3d(3, stride=2)`` then
    flatten, as ``fmcib.models.ModelsGenesisUNet3D(decoder=False)`` (4096 at 48^3 input: a 2x2x2 grid of
    512, position-dependent rather than a global descriptor). Parameter names are the released ones.
    """

    def __init__(self, pool: Pool = "global"):
        super().__init__()
        if pool not in ("global", "fmcib"):
            raise ValueError(f"pool must be 'global' or 'fmcib', got {pool!r}")
        self.pool = pool
        self.down_tr64 = DownTransition(1, 0)
        self.down_tr128 = DownTransition(64, 1)
        self.down_tr256 = DownTransition(128, 2)
        self.down_tr512 = DownTransition(256, 3)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``out512``: ``(n, 1, D, H, W)`` -> ``(n, 512, D/8, H/8, W/8)``."""
        return self.down_tr512(self.down_tr256(self.down_tr128(self.down_tr64(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out512 = self.feature_map(x)
        if self.pool == "global":
            return out512.mean(dim=(2, 3, 4))
        return F.avg_pool3d(out512, kernel_size=3, stride=2).flatten(start_dim=1)


def feature_dim(pool: Pool, size: tuple[int, int, int]) -> int:
    """Embedding size for an input of ``size`` voxels: 512 for the global pool; 512 x the AvgPool3d(3, 2)
    grid of the 1/8 map for the fmcib pool (4096 at 48^3)."""
    if pool == "global":
        return LEVEL_CHANNELS[-1]
    grid = 1
    for s in size:
        m = s // 8  # three 2x2x2 max pools (floor)
        if m < 3:
            raise ValueError(f"the fmcib pool needs sides of at least 24 voxels, got {size}")
        grid *= (m - 3) // 2 + 1
    return LEVEL_CHANNELS[-1] * grid
