"""Models Genesis: self-supervised 3D U-Net pre-trained on chest CT (Zhou et al., MICCAI 2019 / MedIA 2021).

Citation: Z. Zhou, V. Sodha, J. Pang, M. B. Gotway, J. Liang, "Models Genesis", Medical Image Analysis 67,
101840 (2021), doi:10.1016/j.media.2020.101840. Code: MrGiovanni/ModelsGenesis (ASU licence, non-commercial
use only). Weights: Hugging Face ``MrGiovanni/ModelsGenesis`` ``Genesis_Chest_CT.pt`` (same licence),
pre-trained by image restoration on LUNA16 chest CT.

Network: the UNet3D contracting path of :mod:`lesionbench.baselines.zoo._nets.unet3d` (released parameter names;
the decoder ``up_tr*``/``out_tr`` in the checkpoint is deliberately ignored). Its ``ContBatchNorm3d``
normalises with batch statistics even in eval mode; here each sample is normalised with its own
statistics (the release's computation for a batch of one), so features never depend on the batch. The
running statistics it never reads are ignored too.

The two recipes take the embedding from the same 512-channel map ``out512`` in different ways:

- ``official``: the repository's target-task example (``pytorch/README.md``, ``TargetNet``): global
  average pool of ``out512`` -> 512-d. Input as in pre-training (``infinite_generator_3D.py``): cubes of
  64x64x32 voxels on the image's own grid (no resampling), ITK index axes (x, y, z), HU clipped to
  [-1000, 1000] and scaled to [0, 1].
- ``tib``: TumorImagingBench's ``ModelsGenExtractor`` uses ``fmcib.models.ModelsGenesisUNet3D(decoder=False)``:
  ``AvgPool3d(3, stride=2)`` + flatten of ``out512`` at 48^3 -> 4096-d, a 2x2x2 grid of positions rather
  than a global descriptor (so that is the flattened fmcib variant, offered exactly as TIB runs it).

Registered as ``models-genesis``, ``models-genesis:tib`` and ``models-genesis-random-init``.
"""

from __future__ import annotations

import dataclasses

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

CITATION = (
    "Zhou Z, Sodha V, Pang J, Gotway MB, Liang J. Models Genesis. Medical Image Analysis 67, 101840 (2021). "
    "doi:10.1016/j.media.2020.101840"
)
#: Checkpoint keys of ContBatchNorm3d that the released computation never reads (it always normalises
#: with batch statistics); shared with SuPreM's card. Files saved before PyTorch 0.4.1 lack the last one.
UNUSED_BN_BUFFERS = ("*.bn1.running_mean", "*.bn1.running_var", "*.bn1.num_batches_tracked")
#: TIB's patch (48^3) through three 2x2x2 max pools gives a 6^3 map; AvgPool3d(3, 2) makes it 2^3 x 512.
TIB_FLATTENED_DIM = 4096

MODEL = ZooModel(
    name="models-genesis",
    title="Models Genesis UNet3D encoder (Genesis Chest CT)",
    citation=CITATION,
    parameters=7_027_776,
    embedding_dim=512,
    embedding_layer="global average pool of out512 (down_tr512, 512 channels at 1/8 size; the repository's TargetNet)",
    pretraining_data="LUNA16 chest CT (623 scans), self-supervised image restoration (Models Genesis)",
    pretraining_sets=("LUNA16", "LIDC-IDRI"),  # LUNA16's scans are LIDC-IDRI's
    code_licence="ASU licence, non-commercial use only",
    weights_licence="ASU licence, non-commercial use only",
    non_commercial=True,
    network="UNet3D contracting path (down_tr64..down_tr512), ContBatchNorm3d applied per sample; rewritten from the description",
    weights=WeightsFile(
        filename="Genesis_Chest_CT.pt",
        repo_id="MrGiovanni/ModelsGenesis",
        revision="main",
        containers=("state_dict",),
        prefix="module.",
        # the decoder of the released U-Net (with or without the DataParallel prefix), and the batch-norm
        # running statistics ContBatchNorm3d never reads
        ignored=("module.up_tr*", "module.out_tr.*", "up_tr*", "out_tr.*", *UNUSED_BN_BUFFERS),
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="index",
            spacing_mm=(1.0, 1.0, 1.0),  # unused: the image's own grid
            size=(64, 64, 32),
            intensity=Intensity("window", -1000.0, 1000.0, 0.0, 1.0, True),
            interpolation="none",
            source="ModelsGenesis infinite_generator_3D.py: SimpleITK array transposed to (x, y, z), no resampling, "
            "HU clipped to [-1000, 1000] -> [0, 1], cubes 64x64x32; pytorch/README.md TargetNet: global average pool of out512",
        ),
        dataclasses.replace(
            tib_recipe("RAS", embedding_dim=TIB_FLATTENED_DIM),
            embedding_layer="AvgPool3d(3, stride 2) + flatten of out512 (a 2x2x2 grid of 512 at 48^3; fmcib ModelsGenesisUNet3D(decoder=False))",
        ),
    ),
    notes="ContBatchNorm3d's batch statistics are reproduced per sample (batch-size invariant).",
)


def build(recipe: str = "official"):
    """The UNet3D encoder with the recipe's pooling: (b, 1, D, H, W) -> (b, 512) or (b, 4096) at 48^3."""
    from lesionbench.baselines.zoo._nets.unet3d import UNet3DEncoder

    return UNet3DEncoder(pool="global" if recipe == "official" else "fmcib")


ENTRY = register(MODEL, build, batch_size=8)
