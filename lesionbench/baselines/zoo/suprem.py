"""SuPreM (UNet): supervised pre-training on per-voxel annotated abdominal CT (Li et al., ICLR 2024).

Citation: W. Li, A. Yuille, Z. Zhou, "How Well Do Supervised 3D Models Transfer to Medical Imaging Tasks?",
ICLR 2024. Code: MrGiovanni/SuPreM (CC BY-NC-ND 4.0). Weights: Hugging Face ``MrGiovanni/SuPreM``
``supervised_suprem_unet_2100.pth`` (same licence: non-commercial, no derivatives), the UNet backbone of a
CLIP-driven Universal Model trained to segment 25 structures on 2,100 AbdomenAtlas CT scans.

Network: the UNet3D contracting path of :mod:`lesionbench.baselines.zoo._nets.unet3d` (the Models Genesis
architecture; SuPreM's pre-training started from Models Genesis). The checkpoint is the whole Universal
Model under DistributedDataParallel: ``{"net": {"module.backbone.<UNet3D key>": ..., "module.<head>": ...}}``
(SuPreM's own loaders strip two key levels). The backbone's decoder (``up_tr*``) and the Universal
Model's heads (``precls_conv``, ``GAP``, ``controller``, ``organ_embedding``, ``text_to_vision``) are
deliberately ignored, as are the batch-norm running statistics ``ContBatchNorm3d`` never reads. It is
applied per sample (batch-size invariant; the release's computation for a batch of one).

Embedding (both recipes): global average pool of ``out512`` (``down_tr512``) -> 512-d, as TIB's
``SUPREMExtractor`` encoder wrapper does. ``official``: SuPreM's pre-training transforms
(``supervised_pretraining/train.py`` defaults, ``dataset/dataloader_bdmap.py``): Orientation RAS ->
Spacing 1.5 mm bilinear -> ScaleIntensityRange [-175, 250] -> [0, 1] clipped -> 96^3, here centred on the seed.

Registered as ``suprem``, ``suprem:tib`` and ``suprem-random-init``.
"""

from __future__ import annotations

from lesionbench.baselines.zoo.models_genesis import UNUSED_BN_BUFFERS
from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

CITATION = "Li W, Yuille A, Zhou Z. How Well Do Supervised 3D Models Transfer to Medical Imaging Tasks? ICLR 2024."
#: The Universal Model's parts outside the UNet encoder, as saved under DistributedDataParallel.
_HEADS = ("precls_conv", "GAP", "controller", "organ_embedding", "text_to_vision")

MODEL = ZooModel(
    name="suprem",
    title="SuPreM UNet3D encoder (supervised, AbdomenAtlas 2,100 CT)",
    citation=CITATION,
    parameters=7_027_776,
    embedding_dim=512,
    embedding_layer="global average pool of out512 (down_tr512, 512 channels at 1/8 size)",
    pretraining_data="2,100 abdominal CT scans (AbdomenAtlas) with per-voxel labels of 25 structures; supervised segmentation",
    pretraining_sets=("AbdomenAtlas 1.1",),  # 2,100 AbdomenAtlas scans
    code_licence="CC BY-NC-ND 4.0",
    weights_licence="CC BY-NC-ND 4.0",
    non_commercial=True,
    network="UNet3D contracting path (down_tr64..down_tr512), ContBatchNorm3d applied per sample; rewritten from the description",
    weights=WeightsFile(
        filename="supervised_suprem_unet_2100.pth",
        repo_id="MrGiovanni/SuPreM",
        revision="main",
        containers=("net",),
        prefix="module.backbone.",
        # the backbone's decoder, the Universal Model's heads, and the batch-norm running statistics
        # ContBatchNorm3d never reads
        ignored=("module.backbone.up_tr*", "module.backbone.out_tr.*", *(f"module.{h}*" for h in _HEADS), *UNUSED_BN_BUFFERS),
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="RAS",
            spacing_mm=(1.5, 1.5, 1.5),
            size=(96, 96, 96),
            intensity=Intensity("window", -175.0, 250.0, 0.0, 1.0, True),
            interpolation="linear",
            diagonal=False,  # MONAI Spacingd's default: the scanner's rotation is kept, as in SuPreM's own chain
            source="SuPreM supervised_pretraining/train.py defaults (a_min -175, a_max 250, space 1.5, roi 96) and "
            "dataloader_bdmap.py (Orientationd RAS, Spacingd bilinear, ScaleIntensityRanged clip, SpatialPadd constant)",
        ),
        tib_recipe("RAS"),
    ),
    notes="ContBatchNorm3d's batch statistics are reproduced per sample (batch-size invariant).",
)


def build(recipe: str = "official"):
    """The UNet3D encoder with a global average pool: (b, 1, D, H, W) -> (b, 512)."""
    from lesionbench.baselines.zoo._nets.unet3d import UNet3DEncoder

    return UNet3DEncoder(pool="global")


ENTRY = register(MODEL, build, batch_size=4)
