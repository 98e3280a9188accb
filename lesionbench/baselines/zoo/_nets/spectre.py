"""SPECTRE's crop backbone: a 3D ViT with axial rotary position embedding (see :mod:`lesionbench.baselines.zoo.spectre`).

Written from ``spectre-fm`` 0.2.1 (``spectre/models/vision_transformer.py::vit_large_patch16_128`` with
``spectre/presets.py::BACKBONE_KWARGS``; layers in ``spectre/models/layers/{patch_embed,attention,
rotary_pos_embed}.py``), in plain torch: no timm. Module and tensor names follow upstream's, so its
checkpoint loads as saved.

The architecture, as upstream builds it for the published backbone:

* ``patch_embed.proj``: Conv3d(1, 1080, kernel = stride = (16, 16, 8)) on a (128, 128, 64) crop (axes H, W, D
  of the RAS array), giving an 8 x 8 x 8 token grid flattened with D fastest;
* a class token in front, no learned position embedding: RoPE in every attention layer instead, on the
  spatial tokens only (``rope.periods``, a saved buffer: base 1000, head_dim / 6 periods per axis, each
  axis' coordinates at voxel centres mapped to [-1, 1] separately);
* 24 pre-norm blocks: LayerNorm (torch's default eps 1e-5: upstream passes ``nn.LayerNorm`` itself),
  attention with 12 heads of 90 through separate ``q`` and ``kv`` projections (with biases), LayerScale
  ``gamma`` (init 1.0), MLP 1080 -> 4320 -> 1080 with exact GELU; a final LayerNorm; no head.

The output is every token (b, 1 + 512, 1080) as upstream's ``global_pool=''``; :class:`SpectreViT` then
returns the crop embedding SPECTRE itself feeds its feature combiner (``SpectreImageFeatureExtractor.
_pool_crop_tokens``): the class token concatenated with the mean of the patch tokens (2160).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

EMBED_DIM, DEPTH, HEADS, MLP_RATIO = 1080, 24, 12, 4
PATCH = (16, 16, 8)
ROPE_BASE = 1000.0


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class AxialRope(nn.Module):
    """3D rotary embedding without learnable weights: ``periods`` (head_dim // 6) is a saved buffer."""

    def __init__(self, head_dim: int, base: float = ROPE_BASE):
        super().__init__()
        if head_dim % 6:
            raise ValueError(f"3D RoPE needs head_dim divisible by 6, got {head_dim}.")
        n = head_dim // 6
        self.register_buffer("periods", base ** (2 * torch.arange(n, dtype=torch.float32) / (head_dim // 3)))

    def forward(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """sin, cos of shape (H*W*D, head_dim), in float32 whatever the autocast dtype (as upstream)."""
        periods = self.periods.float()
        axes = [(torch.arange(s, device=periods.device, dtype=torch.float32) + 0.5) / s for s in grid]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 2) * 2.0 - 1.0  # (N, 3) in [-1, 1]
        angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        prefix = n - sin.shape[0]  # the class token is not rotated
        dtype = q.dtype

        def rotate(t: torch.Tensor) -> torch.Tensor:
            t = t.float()  # rotated in float32, as upstream does under mixed precision
            spatial = t[:, :, prefix:] * cos + _rotate_half(t[:, :, prefix:]) * sin
            return torch.cat([t[:, :, :prefix], spatial], dim=2).to(dtype)

        out = F.scaled_dot_product_attention(rotate(q), rotate(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * MLP_RATIO)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), sin, cos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(1, dim, kernel_size=PATCH, stride=PATCH)


class SpectreViT(nn.Module):
    """(b, 1, H, W, D) with every side a multiple of (16, 16, 8) -> (b, 2 * dim): [class token, mean patch token].

    ``depth`` is the published 24; smaller values exist only for cheap tests of the arithmetic.
    """

    def __init__(self, depth: int = DEPTH, dim: int = EMBED_DIM, heads: int = HEADS):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.rope = AxialRope(dim // heads)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Upstream's initialisation (the random-init control): truncated normal linears, zero biases."""
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Every output token (b, 1 + N, dim), final LayerNorm applied (upstream's ``forward``)."""
        for side, p in zip(x.shape[2:], PATCH, strict=True):
            if side % p:
                raise ValueError(f"SPECTRE's ViT needs input sides that are multiples of {PATCH}; got {tuple(x.shape[2:])}.")
        x = self.patch_embed.proj(x)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (b, H*W*D, dim), D fastest
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        sin, cos = self.rope(grid)  # type: ignore[arg-type]
        for block in self.blocks:
            x = block(x, sin, cos)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)
        return torch.cat([t[:, 0], t[:, 1:].mean(dim=1)], dim=-1)
