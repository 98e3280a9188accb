"""Dump the patches FMCIB's reference transform chain produces (run with the reference venv's python).

    /tmp/fmcib-ref/bin/python tests/reference/dump_fmcib_patches.py SEEDS.csv OUT.npy

Applies ``fmcib.preprocessing.get_transforms()`` (unmodified; MONAI 1.4.0) to each row of SEEDS.csv
(image_path, coordX, coordY, coordZ) and saves the patches as one (n, 50, 50, 50) float32 array.
A row whose transform fails gets NaNs. Developer tooling for the parity tests: not part of lesionbench.
"""

import sys
import types


def _torchvision_standin():
    # the feature path only uses torchvision.transforms.Lambda; PyPI's torchvision cannot import next
    # to CPU torch in the reference venv (see ../shared/tools/fmcib-reference/run_reference.py)
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]

    class Lambda:
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, x):
            return self.fn(x)

    tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    tr.Lambda, tv.transforms = Lambda, tr
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr


def main():
    seeds, out = sys.argv[1], sys.argv[2]
    _torchvision_standin()
    import numpy as np
    import pandas as pd
    from fmcib.preprocessing import get_transforms

    T = get_transforms(spatial_size=(50, 50, 50))
    df = pd.read_csv(seeds)
    patches = np.full((len(df), 50, 50, 50), np.nan, dtype=np.float32)
    for i, row in enumerate(df.to_dict("records")):
        try:
            p = T(row)
        except Exception as exc:  # reported, the row stays NaN
            sys.stderr.write(f"row {i}: {type(exc).__name__}: {exc}\n")
            continue
        patches[i] = np.asarray(p)[0]
    np.save(out, patches)


if __name__ == "__main__":
    main()
