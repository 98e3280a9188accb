"""PASTA: a pan-tumour CT foundation model pre-trained on synthetic lesions (Lei et al., 2025).

Citation: W. Lei et al., "A Synthetic Data-Driven Radiology Foundation Model for Pan-tumor Clinical
Diagnosis", arXiv:2502.06171 (2025). Code: LWHYC/PASTA (MIT). Weights: ``PASTA_final.pth`` (the authors'
Google Drive link in the README; licence not stated), mirrored by TumorImagingBench as
Hugging Face ``surajpaib/PASTA-Model`` / ``PASTA final.pth``.

Network: nnU-Net's ``Generic_UNet`` encoder as PASTA configures it (``feature_extraction.py::get_pasta``:
base 64, 5 pools, InstanceNorm, LeakyReLU, max 1024), rewritten from that description with the released
parameter names in :mod:`lesionbench.baselines.zoo._nets.pasta`.

Which layer gives the embedding differs between the two recipes, and both are reproduced:

- ``official``: ``Generic_UNet_classify.forward(x, output_feature=True)`` runs the five stages
  ``conv_blocks_context[:-1]`` (not the bottleneck) and global-average-pools the stage-4 output: 1024-d.
- ``tib``: TumorImagingBench's vendored ``Generic_UNet.forward`` also runs the bottleneck
  (``conv_blocks_context[-1]``) and its wrapper pools that: 1024-d from a different layer.

The bottleneck's weights are loaded (and audited) for both recipes. ``official`` input: 1 mm linear,
array axes LPS (``preprocess/NifitiStandard.py`` reorients to nibabel LPS although the README says RAS),
a 96^3 crop around the lesion (the lesion-attribute scripts' ``--crop_shape 96 96 96``), PASTA's piecewise
linear intensity map (HU -1000/-200/200/1000 -> 0/0.2/0.9/1, constant beyond; ``get_loader.py``), zero padding.

The released file is a state dict, flat (the TIB mirror, keys with the DataParallel ``module.`` prefix)
or inside ``network_weights`` (PASTA's own classification loader reads that key); the nnU-Net decoder
(``tu``, ``conv_blocks_localization``, ``seg_outputs``) and any classification ``head`` are deliberately
ignored. Registered as ``pasta``, ``pasta:tib`` and ``pasta-random-init``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

if TYPE_CHECKING:
    from lesionbench.baselines.zoo._nets.pasta import PastaEncoder

CITATION = (
    "Lei W, et al. A Synthetic Data-Driven Radiology Foundation Model for Pan-tumor Clinical Diagnosis. "
    "arXiv:2502.06171 (2025)."
)

_DECODER = ("tu.*", "conv_blocks_localization.*", "seg_outputs.*", "head.*")

MODEL = ZooModel(
    name="pasta",
    title="PASTA nnU-Net encoder (synthetic pan-tumour pre-training)",
    citation=CITATION,
    parameters=113_155_392,
    embedding_dim=1024,
    embedding_layer=(
        "global average pool of encoder stage 4 (conv_blocks_context[4], 1024 channels at 1/16 size; "
        "PASTA feature_extraction.py, output_feature=True)"
    ),
    pretraining_data="PASTA-Gen-30K: 30,000 synthetic CT volumes with generated lesions (segmentation pre-training)",
    pretraining_sets=("PASTA-Gen-30K",),  # synthetic volumes
    code_licence="MIT",
    weights_licence="not stated",
    non_commercial=False,
    network="nnU-Net Generic_UNet encoder (base 64, 5 stride-2 stages, InstanceNorm, LeakyReLU, max 1024); rewritten from the description",
    weights=WeightsFile(
        filename="PASTA final.pth",
        repo_id="surajpaib/PASTA-Model",
        revision="main",
        url="https://drive.google.com/file/d/1A_PjIAqKg0y_Z986HSfTsYKLhc99EMkD (official PASTA_final.pth)",
        containers=("network_weights", "state_dict"),
        prefix="module.",
        ignored=tuple(f"module.{p}" for p in _DECODER) + _DECODER,
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="LPS",
            spacing_mm=(1.0, 1.0, 1.0),
            size=(96, 96, 96),
            intensity=Intensity("piecewise", points=((-1000.0, 0.0), (-200.0, 0.2), (200.0, 0.9), (1000.0, 1.0))),
            interpolation="linear",
            source="PASTA preprocess/NifitiStandard.py (1 mm, order-1 zoom, nibabel LPS), classification get_loader.py "
            "(MultiThreshNormalized -1000/-200/200/1000 -> 0/0.2/0.9/1), crop_shape 96^3, feature_extraction.py (stage-4 pool)",
        ),
        dataclasses.replace(
            tib_recipe("LPS"),
            embedding_layer="global average pool of the bottleneck (conv_blocks_context[5], 1024 channels at 1/32 size; TIB's Generic_UNet)",
        ),
    ),
    notes="The official checkpoint is on Google Drive (no pinned download); the TIB mirror on Hugging Face is downloaded.",
)


def build(recipe: str = "official") -> PastaEncoder:
    """PASTA's encoder pooled at the recipe's layer: (b, 1, D, H, W) -> (b, 1024)."""
    from lesionbench.baselines.zoo._nets.pasta import PastaEncoder

    return PastaEncoder("stage4" if recipe == "official" else "bottleneck")


ENTRY = register(MODEL, build, batch_size=2)
