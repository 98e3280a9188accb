"""Random checkpoints in the exact on-disk layouts of the UNet-family releases (test helper).

The shapes of the parts lesionbench does not build (decoders, heads) are written out from the released
architectures' descriptions, so that a test file holds every key a released file holds:

- Models Genesis ``Genesis_Chest_CT.pt``: ``{"state_dict": {"module.<UNet3D key>": ...}}``, the full UNet3D
  (n_class=1) with its decoder ``up_tr256/128/64`` and ``out_tr``.
- SuPreM ``supervised_suprem_unet_2100.pth``: ``{"net": {"module.backbone.<UNet3D key>": ..., "module.<head>": ...}}``:
  SuPreM's Universal_model (backbone UNet3D without ``out_tr``, 25 classes, word embedding) under DDP.
- PASTA ``PASTA_final.pth`` (TIB mirror): a flat ``{"module.<Generic_UNet key>": ...}`` with nnU-Net's decoder
  ``tu``, ``conv_blocks_localization``, ``seg_outputs``.
"""

from __future__ import annotations

import torch


def _luconv(prefix: str, cin: int, cout: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.conv1.weight": torch.randn(cout, cin, 3, 3, 3, generator=g) * (2.0 / (cin * 27)) ** 0.5,
        f"{prefix}.conv1.bias": torch.randn(cout, generator=g) * 0.05,
        f"{prefix}.bn1.weight": 0.5 + torch.rand(cout, generator=g),
        f"{prefix}.bn1.bias": torch.randn(cout, generator=g) * 0.1,
        f"{prefix}.bn1.running_mean": torch.randn(cout, generator=g),
        f"{prefix}.bn1.running_var": 0.5 + torch.rand(cout, generator=g),
        f"{prefix}.bn1.num_batches_tracked": torch.tensor(1000, dtype=torch.long),
    }


def unet3d_state_dict(*, seed: int = 0, decoder: bool = True, out_tr: bool = True, n_class: int = 1) -> dict[str, torch.Tensor]:
    """Random weights for every key of the released UNet3D (encoder, and decoder when asked)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    cin = 1
    for depth in range(4):
        mid = 32 * 2**depth
        sd.update(_luconv(f"down_tr{2 * mid}.ops.0", cin, mid, g))
        sd.update(_luconv(f"down_tr{2 * mid}.ops.1", mid, 2 * mid, g))
        cin = 2 * mid
    if decoder:
        for name, ch, depth in (("up_tr256", 512, 2), ("up_tr128", 256, 1), ("up_tr64", 128, 0)):
            out = 32 * 2 ** (depth + 1)
            sd[f"{name}.up_conv.weight"] = torch.randn(ch, ch, 2, 2, 2, generator=g) * 0.02
            sd[f"{name}.up_conv.bias"] = torch.zeros(ch)
            sd.update(_luconv(f"{name}.ops.0", ch + ch // 2, out, g))
            sd.update(_luconv(f"{name}.ops.1", out, out, g))
        if out_tr:
            sd["out_tr.final_conv.weight"] = torch.randn(n_class, 64, 1, 1, 1, generator=g) * 0.1
            sd["out_tr.final_conv.bias"] = torch.zeros(n_class)
    return sd


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def unet3d_unused(*, seed: int = 1) -> dict[str, torch.Tensor]:
    """The released UNet3D keys lesionbench does not load: the decoder and every ``bn1`` running statistic."""
    return {k: v for k, v in unet3d_state_dict(seed=seed).items() if not k.startswith("down_tr") or k.rsplit(".", 1)[-1] in BN_BUFFERS}


def suprem_checkpoint(*, seed: int = 0, n_class: int = 25) -> dict:
    """``supervised_suprem_unet_2100.pth``'s layout (Universal_model with the UNet backbone, word embedding)."""
    g = torch.Generator().manual_seed(seed + 1)
    net = {f"module.backbone.{k}": v for k, v in unet3d_state_dict(seed=seed, out_tr=False).items()}
    heads = {
        "precls_conv.0.weight": torch.ones(64), "precls_conv.0.bias": torch.zeros(64),
        "precls_conv.2.weight": torch.randn(8, 64, 1, 1, 1, generator=g), "precls_conv.2.bias": torch.zeros(8),
        "GAP.0.weight": torch.ones(512), "GAP.0.bias": torch.zeros(512),
        "GAP.3.weight": torch.randn(256, 512, 1, 1, 1, generator=g), "GAP.3.bias": torch.zeros(256),
        "controller.weight": torch.randn(153, 512, 1, 1, 1, generator=g), "controller.bias": torch.zeros(153),
        "organ_embedding": torch.randn(n_class, 512, generator=g),
        "text_to_vision.weight": torch.randn(256, 512, generator=g), "text_to_vision.bias": torch.zeros(256),
    }  # fmt: skip
    net.update({f"module.{k}": v for k, v in heads.items()})
    return {"net": net, "epoch": 2100}


def pasta_state_dict(*, seed: int = 0, placeholders: bool = False) -> dict[str, torch.Tensor]:
    """Random weights for the released Generic_UNet keys: encoder and nnU-Net decoder. ``placeholders``:
    every tensor a zero-stride view of one zero with the released shape (exact keys and shapes, no memory:
    PASTA's 113M-parameter encoder and larger decoder would otherwise cost GBs per test file)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def rand(*shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        if placeholders:
            return torch.zeros(()).expand(*shape)
        return torch.randn(*shape, generator=g) * scale + offset

    def unit(prefix: str, cin: int, cout: int) -> None:
        sd[f"{prefix}.conv.weight"] = rand(cout, cin, 3, 3, 3, scale=(2.0 / (cin * 27)) ** 0.5)
        sd[f"{prefix}.conv.bias"] = rand(cout, scale=0.05)
        sd[f"{prefix}.instnorm.weight"] = rand(cout, scale=0.1, offset=1.0)
        sd[f"{prefix}.instnorm.bias"] = rand(cout, scale=0.1)

    chans = (64, 128, 256, 512, 1024)
    cin = 1
    for d, c in enumerate(chans):
        unit(f"conv_blocks_context.{d}.blocks.0", cin, c)
        unit(f"conv_blocks_context.{d}.blocks.1", c, c)
        cin = c
    unit("conv_blocks_context.5.0.blocks.0", 1024, 1024)
    unit("conv_blocks_context.5.1.blocks.0", 1024, 1024)
    for u in range(5):
        skip = chans[-(u + 1)]
        down = 1024 if u == 0 else chans[-u]
        sd[f"tu.{u}.weight"] = rand(down, skip, 2, 2, 2, scale=0.02)
        unit(f"conv_blocks_localization.{u}.0.blocks.0", 2 * skip, skip)
        unit(f"conv_blocks_localization.{u}.1.blocks.0", skip, skip)
        sd[f"seg_outputs.{u}.weight"] = rand(1, skip, 1, 1, 1)
    return sd


def pasta_decoder(*, placeholders: bool = True) -> dict[str, torch.Tensor]:
    """The released nnU-Net decoder keys (``tu``, ``conv_blocks_localization``, ``seg_outputs``), bare."""
    return {k: v for k, v in pasta_state_dict(seed=1, placeholders=placeholders).items() if not k.startswith("conv_blocks_context.")}
