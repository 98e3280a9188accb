"""SAM-Med3D(-turbo)'s image encoder as a lesion encoder (Wang et al., 2023).

Citation: H. Wang, S. Guo, J. Ye, et al., "SAM-Med3D: Towards General-purpose Segmentation Models for
Volumetric Medical Images", arXiv:2310.15161 (2023). Code: uni-medical/SAM-Med3D and MedIM (Apache-2.0).
Weights: Hugging Face ``blueyo0/SAM-Med3D`` ``sam_med3d_turbo.pth``: the promptable model trained on
SA-Med3D-140K (about 22,000 3D images, 143,000 masks, CT and MR) and fine-tuned on 44 datasets ("turbo");
no separate weights licence is stated (the repository is Apache-2.0).

Network: the 3D ViT-B image encoder (:mod:`lesionbench.baselines.zoo._nets.sam_med3d`, written from the
architecture description and checked tensor for tensor against MedIM's module): 128^3 input, 16^3 patches,
embed 768, depth 12, windowed attention (14) with global blocks 2/5/8/11, neck to 384 channels. Embedding:
global average pool of the neck output (384 x 8^3 -> 384). The input size is fixed by the absolute position
table, so the recipe's patch is exactly 128^3.

Weights: the release is a training checkpoint (``train.py``): ``{"model_state_dict": ..., "optimizer_state_dict",
"args": argparse.Namespace, ...}``; MedIM reads ``model_state_dict``. ``torch.load(weights_only=True)`` may
rebuild only ``argparse.Namespace`` besides tensors and plain containers (SAM-Med3D issue #92: the file fails
a plain weights-only load). The image encoder's tensors are under ``image_encoder.``; the prompt encoder
and mask decoder (``prompt_encoder.*``, ``mask_decoder.*``) are deliberately ignored.

Recipe ``official`` = SAM-Med3D's inference preprocessing (``utils/infer_utils.py``): torchio
``Resample(1.5)`` (linear), ``ToCanonical`` (RAS), ``CropOrPad(128)`` (padding 0 HU) around the target,
``ZNormalization(masking_method=x > 0)`` (mean and unbiased std over the voxels > 0 of the crop, applied to
all of it); here the 128^3 crop is centred on the seed. TIB wraps no SAM-Med3D model: no ``tib`` recipe.

Registered as ``sam-med3d`` and ``sam-med3d-random-init``.
"""

from __future__ import annotations

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register
from lesionbench.benchmark.types import Intensity

CITATION = (
    "Wang H, Guo S, Ye J, et al. SAM-Med3D: Towards General-purpose Segmentation Models for Volumetric Medical "
    "Images. arXiv:2310.15161 (2023)."
)

MODEL = ZooModel(
    name="sam-med3d",
    title="SAM-Med3D-turbo image encoder (3D ViT-B)",
    citation=CITATION,
    parameters=92_924_928,
    embedding_dim=384,
    embedding_layer="global average pool of the image encoder's neck output (384 x 8 x 8 x 8)",
    pretraining_data="SA-Med3D-140K (about 22,000 3D CT/MR images, 143,000 masks), promptable segmentation; turbo: fine-tuned on 44 datasets",
    pretraining_sets=("SA-Med3D-140K",),  # 70 public sets + 8K private cases, not enumerated
    code_licence="Apache-2.0",
    weights_licence="not stated separately (repository Apache-2.0)",
    non_commercial=False,
    network="SAM-Med3D ImageEncoderViT3D (vit_b_ori): 128^3 input, patch 16, embed 768, depth 12, window 14, neck 384",
    weights=WeightsFile(
        filename="sam_med3d_turbo.pth",
        repo_id="blueyo0/SAM-Med3D",
        revision="main",
        containers=("model_state_dict",),
        prefix="image_encoder.",
        ignored=("prompt_encoder.*", "mask_decoder.*"),
        safe_globals=("argparse.Namespace",),
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="RAS",
            spacing_mm=(1.5, 1.5, 1.5),
            size=(128, 128, 128),
            intensity=Intensity("zscore-positive", ddof=1),
            pad_value=0.0,
            pad_before_intensity=True,
            interpolation="linear",
            diagonal=False,  # tio.Resample keeps the scanner's rotation, tio.ToCanonical only flips/permutes axes
            source="SAM-Med3D utils/infer_utils.py: tio.Resample(1.5), tio.ToCanonical, tio.CropOrPad(128) (0 padding), "
            "tio.ZNormalization(masking_method=x > 0); here the crop is centred on the seed",
        ),
    ),
    notes="Container and extra entries of sam_med3d_turbo.pth follow train.py/MedIM (not verified on the file itself).",
)


def build(recipe: str = "official"):
    """The released ViT-B image encoder with the pooled neck output, (b, 1, 128, 128, 128) -> (b, 384)."""
    from lesionbench.baselines.zoo._nets.sam_med3d import ImageEncoderViT3D

    return ImageEncoderViT3D()


ENTRY = register(MODEL, build, batch_size=2)
