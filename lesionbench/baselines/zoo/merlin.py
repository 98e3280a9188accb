"""Merlin's image encoder: a vision-language foundation model for abdominal CT (Blankemeier et al., 2024).

Citation: L. Blankemeier, J. P. Cohen, A. Kumar, et al., "Merlin: A Vision Language Foundation Model for 3D
Computed Tomography", arXiv:2406.06512 (2024). Code: StanfordMIMI/Merlin, PyPI ``merlin-vlm`` (MIT).
Weights: Hugging Face ``stanfordmimi/Merlin``
``i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt``, trained on 15,331 abdominal CT
scans with their radiology reports and EHR diagnosis codes (contrastive image-report and phenotype
supervision).

Why not ``merlin.models.Merlin()``: its constructor downloads torchvision's ImageNet ResNet-152, the
Clinical-Longformer text model and the checkpoint. The image trunk is rebuilt here from the architecture
(:mod:`lesionbench.baselines.zoo._nets.merlin`, checked against ``merlin-vlm``'s ``I3ResNet``); nothing downloads
at construction. The release is a flat state dict of the whole CLIP model: the image encoder's tensors are
under ``encode_image.i3_resnet.``; the text encoder (``encode_text.*``) and ``logit_scale`` are deliberately
ignored.

Embedding: ``official`` = the global average pool of ``layer4`` (2048-d, Merlin's ``ImageEmbedding=True``
output); ``tib`` = what TIB's ``MerlinExtractor`` returns, the L2-normalised 512-d ``contrastive_head``
output. Both heads' tensors are loaded (audited) in either case.

Recipes: ``official`` = Merlin's ``ImageTransforms`` (RAS, (1.5, 1.5, 3) mm bilinear, [-1000, 1000] -> [0, 1]
clipped, pad/crop to 224 x 224 x 160, zero padding), the whole-volume input size centred on the seed;
``tib`` = TIB's (48^3 at 1 mm, RAS, [-1000, 1000]). TIB's Merlin wrapper builds ``merlin.models.Merlin()``
(downloads), so the ``tib`` recipe is not parity-tested against it.

Registered as ``merlin``, ``merlin:tib`` and ``merlin-random-init``. CPU cost at the official size is high
(a 3D ResNet-152 on 8 million voxels).
"""

from __future__ import annotations

import dataclasses

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

CITATION = (
    "Blankemeier L, Cohen JP, Kumar A, et al. Merlin: A Vision Language Foundation Model for 3D Computed "
    "Tomography. arXiv:2406.06512 (2024)."
)

MODEL = ZooModel(
    name="merlin",
    title="Merlin image encoder (I3D-inflated ResNet-152)",
    citation=CITATION,
    parameters=121_882_204,
    embedding_dim=2048,
    embedding_layer="global average pool of layer4 (2048 channels; Merlin's ImageEmbedding output)",
    pretraining_data="15,331 abdominal CT scans with radiology reports and EHR diagnosis codes (Stanford), image-report contrastive + phenotype supervision",
    pretraining_sets=("Merlin abdominal CT (Stanford)",),  # Stanford's own abdominal CTs: no task's data
    code_licence="MIT",
    weights_licence="not checked (see the Hugging Face model card)",
    non_commercial=False,
    network="Merlin I3ResNet: torchvision ResNet-152 inflated to 3D (stem 3x7x7), phenotype and contrastive 1x1x1 heads",
    weights=WeightsFile(
        filename="i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt",
        repo_id="stanfordmimi/Merlin",
        revision="main",
        containers=(),
        prefix="encode_image.i3_resnet.",
        ignored=("encode_text.*", "logit_scale"),
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="RAS",
            spacing_mm=(1.5, 1.5, 3.0),
            size=(224, 224, 160),
            intensity=Intensity("window", -1000.0, 1000.0, 0.0, 1.0, True),
            interpolation="linear",
            diagonal=False,
            source="Merlin merlin/data/monai_transforms.py ImageTransforms: Orientation RAS, Spacing (1.5, 1.5, 3) bilinear "
            "(MONAI defaults: align_corners=False, diagonal=False), "
            "ScaleIntensityRange(-1000, 1000 -> 0, 1, clip), SpatialPad + CenterSpatialCrop 224x224x160; here centred on the seed",
        ),
        dataclasses.replace(
            tib_recipe("RAS", window=(-1000.0, 1000.0), embedding_dim=512),
            embedding_layer="contrastive_head on the layer4 global average pool, L2-normalised (512; Merlin()(image, text)[0])",
        ),
    ),
    notes="tib recipe not parity-tested: TIB's MerlinExtractor constructs merlin.models.Merlin(), which downloads.",
)


def build(recipe: str = "official"):
    """Merlin's image trunk; official: pooled 2048 features, tib: the L2-normalised 512-d contrastive embedding."""
    from lesionbench.baselines.zoo._nets.merlin import MerlinI3ResNet

    return MerlinI3ResNet(head="pool" if recipe == "official" else "contrastive")


ENTRY = register(MODEL, build, batch_size=1)
