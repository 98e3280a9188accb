"""SPECTRE: a self-supervised and vision-language pre-trained ViT for CT (Claessens et al.).

Citation: C. Claessens, C. Viviers, G. D'Amicantonio, E. Bondarev, F. van der Sommen, "Scaling
Self-Supervised and Cross-Modal Pretraining for Volumetric CT Transformers", arXiv:2511.17209 (2025; CVPR
2026). Code: PyPI ``spectre-fm`` 0.2.1 (MIT); weights: Hugging Face ``cclaess/SPECTRE``
``spectre_backbone_vit_large_patch16_128.pt`` ("SPECTRE-ViT-Local, SSL + VLA"; CC BY-NC-SA 4.0 per the
package's LICENSE_MODELS: non-commercial), pre-trained on open abdominal and thoracic CT with DINO-style
self-distillation, then aligned with radiology reports and EHR data (SigLIP-style).

Network: the crop backbone ``vit_large_patch16_128`` with ``presets.BACKBONE_KWARGS`` (RoPE base 1000, layer
scale 1.0, no head, ``global_pool=''``), rebuilt in plain torch (:mod:`lesionbench.baselines.zoo._nets.spectre`;
checked against ``spectre-fm``'s own module in ``tests/zoo/test_spectre.py``). Upstream's whole-scan model
tiles a scan into 128 x 128 x 64 crops and lets a feature combiner attend over the crop embeddings; a lesion
here is one crop centred on its seed, so the combiner (and its file) is not used.

Embedding: what SPECTRE computes for one crop and hands its combiner
(``model.py::SpectreImageFeatureExtractor._pool_crop_tokens``): the class token concatenated with the mean of
the 512 patch tokens, after the final LayerNorm, 2 x 1080 = 2160.

Loading: upstream's ``load_pretrained_into`` ``torch.load``s the file and calls ``load_state_dict(strict=True)``
on the bare ``VisionTransformer``: a flat state dict with the module's own names (``cls_token``,
``patch_embed.proj.*``, ``rope.periods``, ``blocks.N.{norm1,attn.q,attn.kv,attn.proj,ls1,norm2,mlp.fc1,
mlp.fc2,ls2}.*``, ``norm.*``), no container, no prefix, nothing to ignore. The same is required here,
audited.

Recipe ``official``: SPECTRE's preprocessing for one crop. Upstream (``io.py::load_and_window``,
``windowing.py``): load as RAS (``nibabel.as_closest_canonical``), HU window [-1000, 1000] -> [0, 1] clipped,
resample with MONAI ``Spacing`` (bilinear, MONAI defaults: align_corners=False, diagonal=False), crops of
(H, W, D) = 128 x 128 x 64 of the RAS array, padded with 0.0 (air after windowing). The spacing: the CLI
leaves a scan at its native spacing unless ``--spacing`` is given; pre-training resampled to (0.5, 0.5, 1.0)
mm (``ssl/transforms/dino_transform.py``, "comply with newest scanners") and, for the image-report stage, to
(0.75, 0.75, 1.5) mm (``siglip_transform.py``), although the package README calls native spacing the
pre-training default. A lesion benchmark needs one physical scale across scans,
so the recipe fixes (0.5, 0.5, 1.0) mm, the CLI's own example and the self-distillation stage's: a 64 x 64 x
64 mm crop. Upstream windows the scan before it resamples it, and so does this recipe
(``intensity_before_resample``: each voxel is mapped, then interpolated; checked against MONAI windowing a
whole scan and then resampling it in ``tests/zoo/test_zoo_infra.py``). (``io.resample`` itself, spectre-fm's ``--spacing`` path,
passes ``affine=`` to MONAI's ``Spacing``, which MONAI 1.6 refuses with a TypeError; the patch is checked against
its native-spacing path on scans already at (0.5, 0.5, 1.0) mm.) No ``tib`` recipe: TumorImagingBench does not
wrap SPECTRE.

Registered as ``spectre`` and ``spectre-random-init``. A ViT-L over 1025 tokens: about 2 s per crop on 2 CPU cores.
"""

from __future__ import annotations

from lesionbench.baselines.zoo._zoo import Recipe, WeightsFile, ZooModel, register
from lesionbench.benchmark.types import Intensity

CITATION = (
    "Claessens C, Viviers C, D'Amicantonio G, Bondarev E, van der Sommen F. Scaling Self-Supervised and Cross-Modal "
    "Pretraining for Volumetric CT Transformers. arXiv:2511.17209 (2025)."
)

MODEL = ZooModel(
    name="spectre",
    title="SPECTRE ViT-L/16 crop backbone",
    citation=CITATION,
    parameters=338_528_160,
    embedding_dim=2160,
    embedding_layer="class token and mean patch token after the final LayerNorm, concatenated (2 x 1080; the crop embedding SPECTRE's feature combiner takes)",
    pretraining_data="open-source abdominal and thoracic CT with paired radiology reports and EHR data; DINO-style self-distillation, then SigLIP-style vision-language alignment",
    pretraining_sets=("SPECTRE pre-training set",),  # open CT with reports, not enumerated on the card
    code_licence="MIT",
    weights_licence="CC BY-NC-SA 4.0",
    non_commercial=True,
    network="3D ViT-L: patch (16, 16, 8) on 128x128x64, 24 blocks of 1080 with 12 heads, axial RoPE (base 1000), layer scale, no head",
    weights=WeightsFile(
        filename="spectre_backbone_vit_large_patch16_128.pt",
        repo_id="cclaess/SPECTRE",
        revision="main",
        containers=(),
        prefix="",
    ),
    recipes=(
        Recipe(
            name="official",
            orientation="RAS",
            spacing_mm=(0.5, 0.5, 1.0),
            size=(128, 128, 64),
            intensity=Intensity("window", -1000.0, 1000.0, 0.0, 1.0, True),
            pad_value=0.0,
            interpolation="linear",
            diagonal=False,
            intensity_before_resample=True,
            source="spectre-fm 0.2.1 io.py load_and_window + windowing.py: RAS, [-1000, 1000] -> [0, 1] clipped, then MONAI Spacing "
            "(0.5, 0.5, 1.0) mm bilinear (ssl/transforms/dino_transform.py; the CLI's --spacing example), one 128x128x64 crop "
            "centred on the seed, padded with 0",
        ),
    ),
    notes="Only the crop backbone: SPECTRE's feature combiner (whole scans) is not used. No tib recipe: TIB does not wrap SPECTRE.",
)


def build(recipe: str = "official"):
    """SPECTRE's ViT-L backbone returning [class token, mean patch token] (2160) per crop."""
    from lesionbench.baselines.zoo._nets.spectre import SpectreViT

    return SpectreViT()


ENTRY = register(MODEL, build, batch_size=2)
