"""Memory needed to fine-tune an adaptable encoder (``--adapt finetune``), measured on CPU.

Two parts, each measured, not estimated from a table:

* state: parameters, their gradients and AdamW's two moments, 4 bytes each in float32, counted from
  the encoder's own ``torch_module()`` (16 bytes per trainable parameter), plus the buffers; and the
  two extra weight copies the training path holds on the device (the pristine pre-trained network each
  run is copied from, and the best epoch's weights kept for early stopping), 4 bytes per parameter each;
* activations: the bytes of every tensor autograd saves for the backward pass during one training
  forward of ``--batch`` patches of the encoder's patch size (``torch.autograd.graph.saved_tensors_hooks``;
  each storage counted once, parameters left out: they are state). The linear head's share is
  negligible. Scaled linearly to the batch sizes listed.

A GPU needs about state + activations(batch) plus the framework's workspace (cuDNN, allocator
fragmentation; typically a few hundred MB to 1 GB more). Example::

    PYTHONPATH=. python benchmarks/finetune_memory.py                       # fmcib-random-init, batch 2
    PYTHONPATH=. python benchmarks/finetune_memory.py --batch 4 --scale 8 16 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lesionbench.benchmark.encoders.plugins import get_encoder


def measure(encoder_name: str, batch: int) -> dict:
    enc = get_encoder(encoder_name, device="cpu", threads=1) if encoder_name.startswith("fmcib") else get_encoder(encoder_name)
    module = enc.torch_module()
    module.train()
    n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    seen: set[int] = set()
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    x = torch.zeros((batch, 1, *enc.meta.patch.size), dtype=torch.float32)
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.float().sum().backward()
    # parameters are saved by some layers too: they are state, not activations
    param_storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in module.parameters()}
    saved -= sum(n for k, n in param_storages.items() if k in seen)
    return {
        "encoder": encoder_name,
        "patch": list(enc.meta.patch.size),
        "trainable_parameters": n_params,
        "state_bytes": 16 * n_params + buffers + 2 * (4 * n_params + buffers),
        "activation_bytes_per_patch": saved / batch,
        "measured_batch": batch,
        "seconds_forward_backward": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="fmcib-random-init")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--scale", type=int, nargs="+", default=[8, 16, 32])
    args = ap.parse_args()
    r = measure(args.encoder, args.batch)
    gib = 1024**3
    r["total_gib_by_batch"] = {b: round((r["state_bytes"] + b * r["activation_bytes_per_patch"]) / gib, 2) for b in args.scale}
    r["state_gib"] = round(r["state_bytes"] / gib, 2)
    r["activation_mib_per_patch"] = round(r["activation_bytes_per_patch"] / 1024**2, 1)
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
