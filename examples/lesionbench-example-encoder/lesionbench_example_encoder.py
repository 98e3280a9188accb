"""An example lesionbench encoder in one file: an intensity histogram of the lesion's neighbourhood.

It stands in for a CT foundation model: replace ``encode`` with your network's forward pass, set
``meta`` (name, version, feature size, the patch you want, your weights' sha256) and the harness does the
rest: patch cutting, caching, probing, scoring. It is registered through the entry point in this
package's ``pyproject.toml`` (group ``lesionbench.encoders``), so after ``pip install`` it is found by
``lesionbench extract --encoder example-intensity-histogram`` and by ``get_encoder(...)``.
"""

from __future__ import annotations

import numpy as np

from lesionbench.benchmark.types import EncoderMeta, PatchSpec

#: Histogram bin edges in Hounsfield units (the patches arrive as (HU + 1024) / 3072).
EDGES_HU = np.array([-1024, -900, -700, -500, -300, -100, 0, 50, 100, 200, 400, 1000, 3072], dtype=np.float32)


class IntensityHistogramEncoder:
    """Normalised HU histograms of the central 20^3 and of the whole 50^3 patch (24 features)."""

    def __init__(self, centre: int = 20):
        self.centre = int(centre)
        self.meta = EncoderMeta(
            name="example-intensity-histogram",
            version="0.1.0",
            feature_dim=2 * (len(EDGES_HU) - 1),
            # the harness cuts patches exactly as FMCIB's reference does (1 mm, 50^3, (z, y, x))
            patch=PatchSpec(size=(50, 50, 50), spacing_mm=(1.0, 1.0, 1.0), method="fmcib"),
            weights_sha256="",  # no weights; a real model puts its checkpoint's sha256 here
            description="Example plug-in: HU histograms of the lesion centre and its surroundings.",
            settings=(("centre", str(self.centre)),),
        )

    def encode(self, patches: np.ndarray) -> np.ndarray:
        """(n, 1, 50, 50, 50) float32 patches -> (n, 24) float32 features, in input order."""
        hu = np.asarray(patches, dtype=np.float32)[:, 0] * 3072 - 1024
        lo = (hu.shape[1] - self.centre) // 2
        centre = hu[:, lo : lo + self.centre, lo : lo + self.centre, lo : lo + self.centre]
        feats = []
        for region in (centre, hu):
            flat = region.reshape(len(region), -1)
            counts = np.stack([np.histogram(np.clip(v, EDGES_HU[0], EDGES_HU[-1]), bins=EDGES_HU)[0] for v in flat])
            feats.append(counts / flat.shape[1])
        return np.concatenate(feats, axis=1).astype(np.float32)
