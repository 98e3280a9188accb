"""VoCo: volume-contrastive self-supervised Swin transformers (Wu, Zhuang & Chen, CVPR 2024 / TPAMI).

Citation: L. Wu, J. Zhuang, H. Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for
3D Medical Image Analysis", CVPR 2024, 22873-22882; "Large-Scale 3D Medical Image Pre-training with
Geometric Context Priors", IEEE TPAMI (2025). Code: Luffy03/VoCo and Luffy03/Large-Scale-Medical
(Apache-2.0); weights: Hugging Face ``Luffy503/VoCo`` ``VoCo_{B,L,H}_SSL_head.pt`` (self-supervised on the
PreCT-160K CT collection; no licence stated for the weights).

Network: MONAI ``SwinUNETR(in_channels=1, feature_size=48 | 96 | 192, use_v2=True)``; only its ``swinViT``
(a ``SwinTransformer`` with patch 2, window 7, depths 2-2-2-2, heads 3-6-12-24, v2 residual conv blocks) is
built. Embedding: the global average pool of ``swinViT``'s last stage output (``hidden_states_out[4]``,
layer-normalised), 16 x feature_size: 768 (B), 1536 (L), 3072 (H) -- as TIB's ``VocoExtractor``. (VoCo's
own SSL head reads the pooled ``encoder1-4``/``encoder10`` outputs instead.) The patch-merging layers are
MONAI <= 1.4's, which VoCo was trained with (MONAI 1.3.0): MONAI 1.5 changed that layer, and with the
installed MONAI's the same weights give other features (:mod:`lesionbench.baselines.zoo._nets.voco`).

Loading. The authors' downstream loader (Large-Scale-Medical ``Downstream/monai/*/models/models.py::load``)
takes the first of ``state_dict``/``network_weights``/``net``/``student`` in the file, strips ``module.``
and ``backbone.`` and maps ``swin_vit`` to ``swinViT``, then copies a tensor only where name and shape match
and calls ``load_state_dict(strict=True)`` on the result -- which passes even when nothing matched. TIB's
``VocoExtractor`` unwraps only ``state_dict`` and strips nothing. The SSL pre-training network
(``VoCoHead``) holds ``backbone.{swinViT,encoder1-4,encoder10}`` plus ``student``/``teacher`` projection
heads, so with a ``backbone.``-prefixed file TIB's loader matches no key at all (whether the released
``_SSL_head.pt`` files keep that prefix is not verified here: they cannot be downloaded in tests). Here the
same unwrapping and renaming as the authors' loader, and then every ``swinViT`` tensor must be present with
its shape, the keys of the SwinUNETR decoder (``encoder*``, ``decoder*``, ``out``) and of the SSL heads are
deliberately ignored, and anything else is an error naming the keys: a file that matches nothing fails.

Recipes: ``official`` = the VoCo pre-training transforms (RAS, 1.5 mm bilinear, ScaleIntensityRange
[-175, 250] -> [0, 1] clipped, 64^3 crops); ``tib`` = TIB's (64^3 at 1 mm, RAS, [-1024, 2048]). TIB runs
VoCo-H only; its recipe does not depend on the model size, so every size gets it.

Registered as ``voco-b``, ``voco-l``, ``voco-h`` (each with ``:tib`` and ``-random-init``).
"""

from __future__ import annotations

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register, tib_recipe
from lesionbench.benchmark.types import Intensity

CITATION = (
    "Wu L, Zhuang J, Chen H. VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical "
    "Image Analysis. CVPR 2024, 22873-22882; Wu L, Zhuang J, Chen H. Large-Scale 3D Medical Image Pre-training "
    "with Geometric Context Priors. IEEE TPAMI (2025)."
)

#: size -> (feature_size, parameters of swinViT), the parameters counted from the built network.
SIZES = {"b": (48, 18_637_362), "l": (96, 73_894_914), "h": (192, 294_863_778)}

#: What SwinUNETR and VoCo's SSL network hold besides swinViT (raw keys may carry module./backbone.).
_PREFIXES = ("", "module.", "backbone.", "module.backbone.")
_OTHER = ("encoder1.*", "encoder2.*", "encoder3.*", "encoder4.*", "encoder10.*") + tuple(f"decoder{i}.*" for i in range(1, 6)) + ("out.*",)
#: VoCoHead's student/teacher projection heads (three Linear layers each)
_HEADS = tuple(f"{p}{h}.layer{i}.*" for p in ("", "module.") for h in ("student", "teacher") for i in (1, 2, 3))
IGNORED = tuple(p + g for p in _PREFIXES for g in _OTHER) + _HEADS

OFFICIAL = Recipe(
    name="official",
    orientation="RAS",
    spacing_mm=(1.5, 1.5, 1.5),
    size=(64, 64, 64),
    intensity=Intensity("window", -175.0, 250.0, 0.0, 1.0, True),
    interpolation="linear",
    diagonal=False,
    source="Large-Scale-Medical Self-supervised/utils/data_trans.py: Orientation RAS, Spacing 1.5 mm bilinear (MONAI defaults: "
    "align_corners=False, diagonal=False), "
    "ScaleIntensityRange(-175, 250 -> 0, 1, clip); roi 64 (voco_train.py); here one 64^3 crop centred on the seed",
)


def _card(size: str) -> ZooModel:
    feature_size, params = SIZES[size]
    return ZooModel(
        name=f"voco-{size}",
        title=f"VoCo-{size.upper()} Swin transformer (SwinUNETR-v2 swinViT, feature size {feature_size})",
        citation=CITATION,
        parameters=params,
        embedding_dim=16 * feature_size,
        embedding_layer=f"global average pool of swinViT's last stage (hidden_states_out[4], layer-normalised, {16 * feature_size} channels)",
        pretraining_data="PreCT-160K: about 160,000 CT volumes, self-supervised (volume contrast, VoCo)",
        pretraining_sets=("PreCT-160K",),  # holds LUNA16 (VoCo's 1.6k pre-training set)
        code_licence="Apache-2.0",
        weights_licence="not stated",
        non_commercial=False,
        network=f"MONAI SwinUNETR(feature_size={feature_size}, use_v2=True).swinViT with MONAI <= 1.4's PatchMerging (VoCo: MONAI 1.3.0)",
        weights=WeightsFile(
            filename=f"VoCo_{size.upper()}_SSL_head.pt",
            repo_id="Luffy503/VoCo",
            revision="main",
            containers=("state_dict", "network_weights", "net", "student"),
            ignored=IGNORED,
            rename=(("module.", ""), ("backbone.", ""), ("swin_vit", "swinViT")),
        ),
        recipes=(OFFICIAL, tib_recipe("RAS", size=64)),
        notes="Unwrapping and renaming as the authors' downstream loader; every swinViT tensor must be in the file.",
    )


MODELS = {size: _card(size) for size in SIZES}


def _builder(size: str):
    def build(recipe: str = "official"):
        """SwinUNETR-v2's swinViT with the pooled last stage, (b, 1, D, H, W) -> (b, 16 * feature_size)."""
        import torch

        from lesionbench.baselines.zoo._nets.voco import VoCoTrunk

        # MONAI's SwinTransformer calls .item() while it is built, which the meta device (where the harness
        # builds networks whose weights all come from a file) cannot do: always build on the CPU
        with torch.device("cpu"):
            return VoCoTrunk(SIZES[size][0])

    return build


ENTRIES = {size: register(MODELS[size], _builder(size), batch_size=2 if size == "b" else 1) for size in SIZES}
