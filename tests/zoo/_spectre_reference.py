"""Run spectre-fm's own backbone on given weights and inputs, in a separate process (test harness only).

    python _spectre_reference.py REF_DIR WEIGHTS.pt INPUTS.npy OUT.npy DEPTH [REPEATS]
    python _spectre_reference.py window REF_DIR SCAN.nii.gz OUT.npz

REF_DIR holds ``pip install --no-deps --target REF_DIR spectre-fm==0.2.1 timm``. Importing ``spectre.models``
imports timm, whose ``timm.data`` imports torchvision, and ``spectre.utils`` imports loralib; neither is
installed here (torchvision must not be: it breaks this torch), and neither is used by the backbone. So
this process alone puts a stub on ``sys.meta_path``: any ``torchvision.*`` or ``loralib.*`` module is
fabricated, each attribute a dummy class. The stub never enters the test process or the project.

The network is upstream's ``vit_large_patch16_128(**BACKBONE_KWARGS)`` (DEPTH 24) or, for a cheap check of
the same arithmetic, ``VisionTransformer`` with its keyword arguments and another depth; the weights go in
through upstream's ``load_pretrained_into`` (strict), and the embedding is upstream's
``SpectreImageFeatureExtractor._pool_crop_tokens`` of the backbone's tokens. OUT.npy receives the
embeddings; with REPEATS, the seconds of each forward pass of the first input are printed as JSON.

``window``: upstream's ``spectre.io.load_and_window(SCAN)`` (nibabel, in REF_DIR too), the crops the
backbone sees and their grid, into OUT.npz.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import time
import types

STUBBED = ("torchvision", "loralib")


class _Dummy(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Dummy(attr, (), {"__init__": lambda self, *a, **k: None})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Dummy(attr, (), {"__init__": lambda self, *a, **k: None})

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


def _stub_and_path(ref_dir: str) -> None:
    sys.meta_path.insert(0, _StubFinder())
    sys.path.insert(0, ref_dir)


def window(ref_dir: str, scan: str, out: str) -> None:
    _stub_and_path(ref_dir)
    import numpy as np
    from spectre.io import load_and_window

    crops, grid, _ = load_and_window(scan)
    np.savez(out, crops=crops.numpy(), grid=np.asarray(grid))


def main(ref_dir: str, weights: str, inputs: str, out: str, depth: str, repeats: str = "0") -> None:
    _stub_and_path(ref_dir)
    import numpy as np
    import torch
    from spectre.model import SpectreImageFeatureExtractor
    from spectre.models import VisionTransformer, vit_large_patch16_128
    from spectre.presets import BACKBONE_KWARGS
    from spectre.utils.modeling import load_pretrained_into

    if int(depth) == 24:
        net = vit_large_patch16_128(**BACKBONE_KWARGS)
    else:
        shape = dict(img_size=(128, 128, 64), patch_size=(16, 16, 8), embed_dim=1080, num_heads=12, mlp_ratio=4, qkv_bias=True, norm_layer=torch.nn.LayerNorm)
        net = VisionTransformer(depth=int(depth), **shape, **BACKBONE_KWARGS)
    net = load_pretrained_into(net, weights, strict=True).eval()
    x = torch.from_numpy(np.load(inputs))
    with torch.inference_mode():
        z = SpectreImageFeatureExtractor._pool_crop_tokens(None, net(x))
        times = []
        for _ in range(int(repeats)):
            t = time.perf_counter()
            net(x[:1])
            times.append(time.perf_counter() - t)
    np.save(out, z.numpy())
    if times:
        print(json.dumps({"seconds": times}))


if __name__ == "__main__":
    if sys.argv[1] == "window":
        window(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
