"""MedicalNet (Med3D): 3D ResNets pre-trained on medical segmentation (Chen, Ma & Zheng, 2019).

Citation: S. Chen, K. Ma, Y. Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis",
arXiv:1904.00625 (2019). Code: Tencent/MedicalNet (MIT); weights: Hugging Face
``TencentMedicalNet/MedicalNet-Resnet{N}`` (MIT), ``resnet_{N}_23dataset.pth`` (pre-trained on 23 public
CT and MR segmentation datasets; MONAI's default) -- the older ``resnet_{N}.pth`` (3DSeg-8) has the same
layout and loads too. Container ``{"state_dict": ...}``, keys prefixed ``module.`` (DataParallel).

Network: the release's trunk (:mod:`lesionbench.baselines.zoo._nets.medicalnet`: stride-2 stem, dilated
stride-1 ``layer3``/``layer4``, shortcut "B" for ResNet-10/50 and "A" for ResNet-18/34). MONAI's
``resnet{N}(pretrained=True)`` loads the same tensors into a network with another stem stride and no
dilation, i.e. another function of the same weights; that is why the trunk is rebuilt here. The
segmentation head ``conv_seg`` is deliberately ignored if a checkpoint carries it. Embedding: global
average pool of ``layer4`` (512-d for ResNet-10/18/34, 2048-d for ResNet-50).

Recipe: MedicalNet publishes no lesion-patch recipe (its data loader resizes whole volumes to 56x448x448
with nearest-neighbour ``ndimage.zoom`` and z-scores them over the voxels > 0, filling voxels == 0 with
N(0, 1) noise). The ``official`` recipe keeps its interpolation and intensity mapping on FMCIB's lesion-patch
grid (whose paper reports Med3D features as a baseline): a 50^3 patch at 1 mm around the seed, nearest-
neighbour resampling, z-score with the patch's mean and standard deviation (ddof 0) over its voxels > 0,
the array in RAS order (MedicalNet feeds nibabel's array in each file's own voxel order; nibabel's
canonical RAS is the choice made here). The random fill of zero voxels is left out (it would make features
non-deterministic); voxels padded beyond the image are 0 after normalisation, the fill's mean. TIB wraps
no MedicalNet model: no ``tib`` recipe.

Registered as ``medicalnet-r10``, ``medicalnet-r18``, ``medicalnet-r34``, ``medicalnet-r50`` and their
``-random-init`` controls.
"""

from __future__ import annotations

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register
from lesionbench.benchmark.types import Intensity

CITATION = "Chen S, Ma K, Zheng Y. Med3D: Transfer Learning for 3D Medical Image Analysis. arXiv:1904.00625 (2019)."

#: depth -> parameters of the trunk (conv_seg excluded), counted from the built network.
PARAMETERS = {10: 14_355_520, 18: 32_986_176, 34: 63_295_808, 50: 46_155_072}

OFFICIAL = Recipe(
    name="official",
    orientation="RAS",
    spacing_mm=(1.0, 1.0, 1.0),
    size=(50, 50, 50),
    intensity=Intensity("zscore-positive", ddof=0),
    pad_value=0.0,
    interpolation="nearest",
    diagonal=False,  # ndimage.zoom resizes the stored array: the scanner's rotation is kept
    source="MedicalNet datasets/brains18.py: ndimage.zoom order=0, z-score over voxels > 0 (numpy std); "
    "50^3 at 1 mm around the seed (FMCIB's lesion-patch grid), RAS (the release does not reorient); "
    "no N(0, 1) fill of zero voxels",
)


def _card(depth: int) -> ZooModel:
    dim = 2048 if depth >= 50 else 512
    shortcut = "A (avg-pool + zero channels)" if depth in (18, 34) else "B (1x1 conv, no bias, + BN)"
    return ZooModel(
        name=f"medicalnet-r{depth}",
        title=f"MedicalNet (Med3D) ResNet-{depth}",
        citation=CITATION,
        parameters=PARAMETERS[depth],
        embedding_dim=dim,
        embedding_layer=f"global average pool of layer4 ({dim} channels, dilation 4, stride 1)",
        pretraining_data="23 public CT and MR segmentation datasets (supervised segmentation; resnet_N_23dataset.pth)",
        pretraining_sets=("MedicalNet 23 datasets",),  # not enumerated on the card
        code_licence="MIT",
        weights_licence="MIT",
        non_commercial=False,
        network=f"MedicalNet ResNet-{depth}: stride-2 stem, dilated layer3/layer4 (2, 4), shortcut {shortcut}",
        weights=WeightsFile(
            filename=f"resnet_{depth}_23dataset.pth",
            repo_id=f"TencentMedicalNet/MedicalNet-Resnet{depth}",
            revision="main",
            containers=("state_dict",),
            prefix="module.",
            # the segmentation head of MedicalNet's training network (absent from the released files)
            ignored=("module.conv_seg.*", "conv_seg.*"),
        ),
        recipes=(OFFICIAL,),
        notes=f"resnet_{depth}.pth (3DSeg-8 pre-training) has the same layout and loads with --weights.",
    )


MODELS = {depth: _card(depth) for depth in (10, 18, 34, 50)}


def _builder(depth: int):
    def build(recipe: str = "official"):
        """The MedicalNet trunk, (b, 1, D, H, W) -> (b, 512 or 2048)."""
        from lesionbench.baselines.zoo._nets.medicalnet import MedicalNetResNet

        return MedicalNetResNet(depth)

    return build


ENTRIES = {depth: register(MODELS[depth], _builder(depth), batch_size=8 if depth < 50 else 4) for depth in MODELS}
