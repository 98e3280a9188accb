"""CT-FM: a 3D image-based foundation model for radiological tasks (Pai et al., 2025).

Citation: S. Pai, I. Hadzic, D. Bontempi, et al., "Vision Foundation Models for Computed Tomography",
arXiv:2501.09001 (2025). Code: github.com/project-lighter/CT-FM (MIT). Weights: Hugging Face
``project-lighter/ct_fm_feature_extractor`` (``model.safetensors``, Apache-2.0), pre-trained with
self-supervised contrastive learning on 148,000 CT scans of the Imaging Data Commons.

Network: MONAI ``segresnet_ds.SegResEncoder(spatial_dims=3, in_channels=1, init_filters=32,
blocks_down=(1, 2, 2, 4, 4))`` (batch norm); the embedding is the global average pool of the last
(deepest) level: 512-d. Two weight layouts load: the Hugging Face safetensors (the encoder's own 161 keys)
and the older ``surajpaib/CT-FM-SegResNet`` ``pretrained_segresnet.torch`` (a SegResNetDS state dict:
``encoder.`` keys; its decoder ``up_layers.*`` is deliberately ignored). TIB loads the latter with
``strict=False`` and only logs what matched; here a key that does not fit is an error.

Registered as ``ct-fm`` (official recipe), ``ct-fm:tib`` (TIB's) and ``ct-fm-random-init`` (control).
"""

from __future__ import annotations

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

CITATION = (
    "Pai S, Hadzic I, Bontempi D, et al. Vision Foundation Models for Computed Tomography. "
    "arXiv:2501.09001 (2025)."
)

MODEL = ZooModel(
    name="ct-fm",
    title="CT-FM SegResNet encoder",
    citation=CITATION,
    parameters=77_760_992,
    embedding_dim=512,
    embedding_layer="global average pool of the last SegResEncoder level (layers.4, 512 channels)",
    pretraining_data="148,000 CT scans (Imaging Data Commons), self-supervised (intra-sample contrastive)",
    pretraining_sets=("Imaging Data Commons",),  # the IDC pool: 69 cohorts, not listed per collection
    code_licence="MIT",
    weights_licence="Apache-2.0",
    non_commercial=False,
    network="MONAI SegResEncoder(init_filters=32, blocks_down=(1, 2, 2, 4, 4), batch norm)",
    weights=WeightsFile(
        filename="model.safetensors",
        repo_id="project-lighter/ct_fm_feature_extractor",
        revision="main",
        containers=("state_dict",),
        prefix="encoder.",
        ignored=("up_layers.*",),
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="SPL",
            spacing_mm=(3.0, 1.0, 1.0),
            size=(24, 128, 128),
            intensity=Intensity("window", -1024.0, 2048.0, 0.0, 1.0, True),
            interpolation="linear",
            diagonal=False,
            source="CT-FM feature extractor (MONAI): Orientation SPL, Spacing (3, 1, 1) mm (defaults: bilinear, "
            "align_corners=False, diagonal=False), tiles 24x128x128, ScaleIntensityRange(-1024, 2048 -> 0, 1, clip); "
            "here one tile centred on the seed",
        ),
        tib_recipe("SPL"),
    ),
    notes="The older torch release surajpaib/CT-FM-SegResNet pretrained_segresnet.torch (keys 'encoder.*') loads too.",
)


def build(recipe: str = "official"):
    """SegResEncoder returning the pooled last level, (b, 1, D, H, W) -> (b, 512)."""
    from monai.networks.nets.segresnet_ds import SegResEncoder

    return SegResEncoder(spatial_dims=3, in_channels=1, init_filters=32, blocks_down=(1, 2, 2, 4, 4), head_module=_pool_last)


def _pool_last(levels):
    import torch

    return torch.nn.functional.adaptive_avg_pool3d(levels[-1], 1).flatten(start_dim=1)


ENTRY = register(MODEL, build, batch_size=4)
