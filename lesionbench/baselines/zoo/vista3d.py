"""VISTA3D's image encoder (He et al., 2024) as a lesion encoder.

Citation: Y. He, P. Guo, Y. Tang, et al., "VISTA3D: A Unified Segmentation Foundation Model For 3D Medical
Imaging", arXiv:2406.05285 (2024). Code: MONAI (Apache-2.0). Weights: ``model_vista3d.pt`` of the MONAI
model zoo bundle (also Hugging Face ``MONAI/VISTA3D-HF``); the NVIDIA release's licence text contradicts
itself (an open licence in one place, non-commercial terms in another), so the weights are flagged
non-commercial here to be safe. Trained supervised (and with pseudo-labels) on 11,454 CT volumes of 127
classes.

Network: ``vista3d132``'s ``image_encoder.encoder``, which is MONAI ``SegResEncoder(init_filters=48,
blocks_down=(1, 2, 2, 4, 4), norm="instance")``; the embedding is the global average pool of its last level
(768-d). The released checkpoint is the whole ``vista3d132`` state dict: the encoder is under
``image_encoder.encoder.``; the decoders (``image_encoder.up_layers*``) and the class and point heads are
deliberately ignored, and any other key is an error. TIB loads it with ``strict=False``.

Registered as ``vista3d`` (official recipe), ``vista3d:tib`` and ``vista3d-random-init``.
"""

from __future__ import annotations

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

CITATION = (
    "He Y, Guo P, Tang Y, et al. VISTA3D: A Unified Segmentation Foundation Model For 3D Medical Imaging. "
    "arXiv:2406.05285 (2024)."
)

MODEL = ZooModel(
    name="vista3d",
    title="VISTA3D image encoder",
    citation=CITATION,
    parameters=174_951_120,
    embedding_dim=768,
    embedding_layer="global average pool of the last image_encoder.encoder level (layers.4, 768 channels)",
    pretraining_data="11,454 CT volumes, 127 classes (supervised and pseudo-labelled segmentation)",
    pretraining_sets=("VISTA3D training set",),  # 11,454 public CT volumes, not enumerated on the card
    code_licence="Apache-2.0",
    weights_licence="NVIDIA release terms (README contradicts itself: open vs non-commercial)",
    non_commercial=True,
    network="MONAI SegResEncoder(init_filters=48, blocks_down=(1, 2, 2, 4, 4), instance norm) = vista3d132.image_encoder.encoder",
    weights=WeightsFile(
        filename="model_vista3d.pt",
        url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/model_vista3d.pt",
        containers=("state_dict", "model"),
        prefix="image_encoder.encoder.",
        ignored=("image_encoder.up_layers.*", "image_encoder.up_layers_auto.*", "class_head.*", "point_head.*"),
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="RAS",
            spacing_mm=(1.5, 1.5, 1.5),
            size=(128, 128, 128),
            intensity=Intensity("window", -963.8247, 1053.6753, 0.0, 1.0, True),
            interpolation="linear",
            diagonal=False,
            source="VISTA3D bundle (MONAI Orientation then Spacing, diagonal=False) inference transforms: RAS, 1.5 mm, ScaleIntensityRange(-963.8247, 1053.6753 -> 0, 1, clip), "
            "patch 128^3; here one patch centred on the seed",
        ),
        tib_recipe("RAS"),
    ),
)


def build(recipe: str = "official"):
    """VISTA3D's image encoder returning the pooled last level, (b, 1, D, H, W) -> (b, 768)."""
    from monai.networks.nets.segresnet_ds import SegResEncoder

    from lesionbench.baselines.zoo.ct_fm import _pool_last

    return SegResEncoder(spatial_dims=3, in_channels=1, init_filters=48, blocks_down=(1, 2, 2, 4, 4), norm="instance", head_module=_pool_last)


ENTRY = register(MODEL, build, batch_size=2)
