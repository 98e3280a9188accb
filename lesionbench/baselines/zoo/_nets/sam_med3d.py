"""SAM-Med3D's 3D ViT image encoder, written from the architecture the release describes.

Wang et al., "SAM-Med3D: Towards General-purpose Segmentation Models for Volumetric Medical Images"
(arXiv:2310.15161), code uni-medical/SAM-Med3D and its model package MedIM (``medim.create_model("SAM-Med3D")``),
Apache-2.0. The released ``sam_med3d_turbo.pth`` holds the whole promptable model; only its
``image_encoder.*`` tensors are used here (the prompt encoder and mask decoder need clicks).

The encoder (``build_sam3D_vit_b_ori``): a 3D ViT-B (embed 768, depth 12, 12 heads, MLP ratio 4) on 16^3
patches of a 128^3 input (8^3 tokens) with a learned absolute position table (1, 8, 8, 8, 768), decomposed
relative position tables per axis in every block, windowed attention (window 14) except in blocks 2, 5, 8
and 11 (global), LayerNorm eps 1e-6, exact GELU; then a neck (1x1x1 conv 768 -> 384 without bias,
channel LayerNorm, 3x3x3 conv without bias, channel LayerNorm) -> (n, 384, 8, 8, 8). The embedding is its
global average: 384 features.

Two behaviours of the released code are reproduced on purpose, because the weights were trained with them:

- a window (14) larger than the token grid (8) zero-pads the grid to 14^3 after ``norm1`` and attends over
  all 2744 positions, the padded ones included (no mask), then crops back to 8^3;
- the decomposed relative position terms are broadcast onto the attention map as the released indexing
  does it, which is not the textbook pairing: for a query at (i, j, l) and a key at (p, q, r) it adds
  ``rel_d[i, j, l][r] + rel_h[i, j, p][r] + rel_w[i, j, q][r]`` (textbook: ``rel_d[..][p] + rel_h[..][q] +
  rel_w[..][r]``). Both coincide in shape only because every grid is cubic.

``tests/zoo/test_sam_med3d.py`` checks features against MedIM's own module with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ViT3DConfig:
    """Hyper-parameters of the image encoder; the defaults are the released SAM-Med3D(-turbo) ViT-B."""

    img_size: int = 128
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    out_chans: int = 384
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


RELEASED = ViT3DConfig()


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (n, 1, D, H, W) -> (n, D/p, H/p, W/p, C) (channels last)."""

    def __init__(self, patch: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over a cubic token grid with decomposed relative position tables."""

    def __init__(self, dim: int, num_heads: int, size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.size = size
        # zeros: the release's initialisation (rel_pos_zero_init=True)
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, head_dim))

    def _table(self, table: torch.Tensor) -> torch.Tensor:
        """(size, size, head_dim): the embedding of each (query, key) offset along one axis."""
        idx = torch.arange(self.size, device=table.device)
        return table[idx[:, None] - idx[None, :] + self.size - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        if not d == h == w == self.size:
            raise ValueError(f"attention built for a {self.size}^3 grid got {d}x{h}x{w}")
        n, heads = d * h * w, self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).reshape(3, b * heads, n, c // heads)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        rq = q.reshape(b * heads, d, h, w, -1)
        rel_d = torch.einsum("bdhwc,dkc->bdhwk", rq, self._table(self.rel_pos_d))
        rel_h = torch.einsum("bdhwc,hkc->bdhwk", rq, self._table(self.rel_pos_h))
        rel_w = torch.einsum("bdhwc,wkc->bdhwk", rq, self._table(self.rel_pos_w))
        # the released pairing (see the module docstring): the last (key) axis of every term lands on the
        # key-w axis; rel_h's query-w axis on the key-d axis, rel_w's query-w axis on the key-h axis
        attn = attn.view(b * heads, d, h, w, d, h, w)
        attn = attn + rel_d[:, :, :, :, None, None, :] + rel_h[:, :, :, None, :, None, :] + rel_w[:, :, :, None, None, :, :]
        attn = attn.view(b * heads, n, n).softmax(dim=-1)
        out = (attn @ v).view(b, heads, d, h, w, -1).permute(0, 2, 3, 4, 1, 5).reshape(b, d, h, w, c)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block; ``window`` > 0 attends within zero-padded windows of that size."""

    def __init__(self, cfg: ViT3DConfig, window: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, window if window > 0 else cfg.grid)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = MLP(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window > 0:
            y = _windowed(self.attn, y, self.window)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


def _windowed(attn: nn.Module, x: torch.Tensor, s: int) -> torch.Tensor:
    """Apply ``attn`` within non-overlapping s^3 windows of x (b, D, H, W, C), zero-padding at the far end."""
    b, d, h, w, c = x.shape
    pd, ph, pw = (-d) % s, (-h) % s, (-w) % s
    x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
    nd, nh, nw = (d + pd) // s, (h + ph) // s, (w + pw) // s
    win = x.view(b, nd, s, nh, s, nw, s, c).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, s, s, s, c)
    out = attn(win).view(b, nd, nh, nw, s, s, s, c).permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, nd * s, nh * s, nw * s, c)
    return out[:, :d, :h, :w].contiguous()


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of (n, C, D, H, W), eps 1e-6 (the neck's normalisation)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class ImageEncoderViT3D(nn.Module):
    """(n, 1, S, S, S) with S = ``cfg.img_size`` -> (n, ``cfg.out_chans``): the neck's output, globally averaged."""

    def __init__(self, cfg: ViT3DConfig = RELEASED) -> None:
        super().__init__()
        self.cfg = cfg
        g = cfg.grid
        self.pos_embed = nn.Parameter(torch.zeros(1, g, g, g, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size) for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv3d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm3d(cfg.out_chans),
            nn.Conv3d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(cfg.out_chans),
        )
        self.feature_dim = cfg.out_chans

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The released encoder's output, (n, out_chans, g, g, g)."""
        size = self.cfg.img_size
        if tuple(x.shape[2:]) != (size, size, size):
            # the absolute position table is fixed to the pre-training grid: no other input size is defined
            raise ValueError(f"SAM-Med3D's image encoder takes (n, 1, {size}, {size}, {size}) inputs; got {tuple(x.shape)}")
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3, 4))
