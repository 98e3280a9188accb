"""VoCo's network: the ``swinViT`` of MONAI ``SwinUNETR(in_channels=1, feature_size=F, use_v2=True)`` with the
global average pool of its last stage as output (see :mod:`lesionbench.baselines.zoo.voco`).

VoCo was trained with MONAI 1.3.0 (Large-Scale-Medical requirements.txt), whose default ("merging")
``PatchMerging`` concatenates the eight 2x2x2 sub-grids with two of them duplicated and two left out
((0,1,0) and (0,0,1) twice; (1,1,0) and (0,1,1) never). MONAI kept that on purpose for pre-trained
SwinUNETR weights (MONAI PR #5106, closed) until 1.5 replaced it with the eight distinct sub-grids (MONAI
issue #8284, PR #8285): the same weights then compute another function. :class:`LegacyPatchMerging` is the
layer the weights were trained with (MONAI <= 1.4, also TIB's environment), used whatever MONAI is installed.
"""

from __future__ import annotations

import torch
from monai.networks.nets.swin_unetr import MERGING_MODE, PatchMergingV2, SwinTransformer
from torch import nn
from torch.nn import functional as F

#: (d, h, w) offsets of the eight concatenated sub-grids in MONAI <= 1.4's 3D ``PatchMerging``.
LEGACY_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class LegacyPatchMerging(PatchMergingV2):
    """MONAI <= 1.4 ``PatchMerging`` for 3D inputs (b, d, h, w, c): pad odd sides at the end, concatenate the
    sub-grids of :data:`LEGACY_OFFSETS`, LayerNorm, linear 8c -> 2c. Same parameters as MONAI's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expecting (b, d, h, w, c), got {tuple(x.shape)}")
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in LEGACY_OFFSETS], -1)
        return self.reduction(self.norm(x))


class VoCoTrunk(nn.Module):
    """(b, 1, D, H, W) -> (b, 16 * feature_size); D, H, W multiples of 32 (five 2x reductions)."""

    def __init__(self, feature_size: int) -> None:
        super().__init__()
        # the arguments SwinUNETR passes to its swinViT (MONAI 1.3-1.6), hence SwinUNETR's key names
        self.swinViT = SwinTransformer(
            in_chans=1,
            embed_dim=feature_size,
            window_size=(7, 7, 7),
            patch_size=(2, 2, 2),
            depths=(2, 2, 2, 2),
            num_heads=(3, 6, 12, 24),
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.0,
            norm_layer=nn.LayerNorm,
            patch_norm=False,
            use_checkpoint=False,
            spatial_dims=3,
            downsample=MERGING_MODE["merging"],
            use_v2=True,
        )
        for i in range(1, 5):  # the merging layer the weights were trained with (see the module docstring)
            getattr(self.swinViT, f"layers{i}")[0].downsample.__class__ = LegacyPatchMerging
        self.feature_dim = 16 * feature_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 32 for s in x.shape[2:]):
            # SwinUNETR's own input check (its forward refuses such inputs; the bare swinViT would pad silently)
            raise ValueError(f"VoCo's Swin transformer needs sides divisible by 32; got {tuple(x.shape[2:])}")
        last = self.swinViT(x, normalize=True)[-1]
        return nn.functional.adaptive_avg_pool3d(last, 1).flatten(start_dim=1)
