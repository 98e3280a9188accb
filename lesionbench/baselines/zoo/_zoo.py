"""The model zoo's shared contract: model cards, recipes, audited weight loading, and the encoder factory.

One zoo encoder module describes its model with a :class:`ZooModel` card (citation, parameters, embedding
layer, pre-training data, licences, the released weights file with its container and key layout, the keys
deliberately ignored, and its ``official`` and ``tib`` :class:`Recipe`) and a function that builds the
network (patches in, embeddings out). :func:`register` then registers ``<name>`` (official recipe),
``<name>:tib`` and ``<name>-random-init`` in ``ENCODERS``; every factory takes
``weights=None, *, recipe=..., device=None, batch_size=..., random_init=False, seed=0``.

Weights come from ``weights=PATH`` or from the card's pinned Hugging Face file (repository, revision, file
name) downloaded with ``huggingface_hub`` into ``$LESIONBENCH_WEIGHTS`` or ``$LESIONBENCH_CACHE/weights``
(:mod:`lesionbench.baselines.zoo._weights`); loading is audited by :func:`load_audited`: every network
tensor must come from the checkpoint, and anything missing, unexpected, mis-shaped or non-finite is an
error naming the keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lesionbench.benchmark.errors import ConfigurationError, WeightsError
from lesionbench.benchmark.types import EncoderMeta

logger = logging.getLogger(__name__)

from lesionbench.baselines.zoo._card import RECIPES, Recipe, WeightsFile, ZooModel, tib_recipe  # noqa: F401 (the one module encoder files import)
from lesionbench.baselines.zoo._load import audit, check_finite, load_audited, read_checkpoint, read_checkpoint_and_digest, unwrap  # noqa: F401 (re-exported: the one module encoder files import)


# ------------------------------------------------------------------------------------------ encoder
class ZooEncoder:
    """A zoo network as a patch encoder: (n, 1, *recipe size) -> (n, feature_dim) float32, in batches.

    The network maps a float32 batch (b, 1, D, H, W) to (b, feature_dim) (or anything that reshapes to it).
    """

    def __init__(self, network: Any, meta: EncoderMeta, *, device: str | None = None, batch_size: int = 4, bf16: bool = False, threads: int | None = None):
        from lesionbench.benchmark.host import inference_device

        self.device, self.threads = inference_device(device, threads)
        if int(batch_size) < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.bf16 = bool(bf16)
        self.network = network.to(self.device).eval()
        self.meta = meta

    def encode(self, patches: np.ndarray) -> np.ndarray:
        import torch

        x = np.asarray(patches)
        want = tuple(int(s) for s in self.meta.patch.size)
        if x.ndim != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != want:
            raise ConfigurationError(f"{self.meta.name} encodes patches shaped (n, 1, {', '.join(map(str, want))}); got {x.shape}.")
        out = np.empty((x.shape[0], self.meta.feature_dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, x.shape[0], self.batch_size):
                batch = torch.from_numpy(np.array(x[s : s + self.batch_size], dtype=np.float32)).to(self.device)
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    f = self.network(batch)
                out[s : s + len(batch)] = f.float().reshape(len(batch), -1).cpu().numpy()
        return out


@dataclass(frozen=True)
class ZooEntry:
    """A registered zoo model: its card and the function building its network for a recipe."""

    model: ZooModel
    build: Callable[[str], Any] = field(compare=False)
    batch_size: int = 4


#: Every zoo model by card name (filled by :func:`register`); ``lesionbench encoders list`` reads it.
ZOO: dict[str, ZooEntry] = {}


def _meta_build(entry: ZooEntry, recipe: str) -> Any:
    """The network built on the meta device (no random initialisation of weights the checkpoint replaces
    at once), or None when its constructor needs real tensors (e.g. ``.item()`` in MONAI's Swin)."""
    import torch

    try:
        with torch.device("meta"):
            return entry.build(recipe)
    except (RuntimeError, NotImplementedError) as exc:
        logger.debug("%s: built normally (the meta-device build failed: %s)", entry.model.name, exc)
        return None


def build_encoder(
    entry: ZooEntry,
    weights: str | Path | None = None,
    *,
    recipe: str = "official",
    device: str | None = None,
    batch_size: int | None = None,
    random_init: bool = False,
    seed: int = 0,
    bf16: bool = False,
    threads: int | None = None,
    progress: bool = True,
) -> ZooEncoder:
    """Build ``entry``'s encoder: the card's released (or given) weights, audited, or seeded random ones."""
    import torch

    from lesionbench.baselines.zoo._weights import locate, verify

    model = entry.model
    if recipe not in RECIPES:
        raise ConfigurationError(f"Unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}.")
    rec = model.recipe(recipe)
    if random_init:
        if weights is not None:
            raise ConfigurationError(f"{model.name}: random_init builds random weights; do not also give weights ({weights}).")
        with torch.random.fork_rng(devices=[]):  # a private generator state: never touch the caller's seed
            torch.manual_seed(int(seed))
            network = entry.build(recipe)
        digest, n_loaded = f"random-init-seed-{int(seed)}", None
        settings: tuple[tuple[str, str], ...] = (("recipe", recipe), ("seed", str(int(seed))))
    else:
        path, managed = locate(model, weights, progress=progress)
        try:
            checkpoint, digest = read_checkpoint_and_digest(path, model.weights)  # one read: the digest of the bytes loaded
        except WeightsError:
            if managed:  # a damaged download: its recorded digest says so, and how to fetch it again
                verify(model, path)
            raise
        if managed:
            verify(model, path, digest)
        network = _meta_build(entry, recipe)
        if network is not None:
            n_loaded = load_audited(network, checkpoint, model, source=str(path), assign=True)
        if network is None or any(t.is_meta for t in (*network.parameters(), *network.buffers())):  # non-persistent buffers
            network = entry.build(recipe)
            n_loaded = load_audited(network, checkpoint, model, source=str(path))
        settings = (("recipe", recipe),)
    if bf16:
        settings += (("precision", "bf16-autocast"),)
    meta = EncoderMeta(
        name=model.display_name(recipe, random_init=random_init),
        version=model.version,
        feature_dim=model.feature_dim(recipe),
        patch=rec.patch_spec(),
        weights_sha256=digest,
        description=(f"Control: {model.title} architecture with random weights (seed {int(seed)}). " if random_init else f"{model.title}. ")
        + f"Embedding: {model.layer(recipe)}. Recipe {rec.label()}.",
        citation=model.citation,
        settings=settings,
        card=model.card_items(recipe, weights_sha256=digest, tensors_loaded=n_loaded),
    )
    return ZooEncoder(network, meta, device=device, batch_size=int(batch_size or entry.batch_size), bf16=bf16, threads=threads)


def register(model: ZooModel, build: Callable[[str], Any], *, batch_size: int = 4) -> ZooEntry:
    """Register ``model`` in ``ENCODERS`` as ``<name>``, ``<name>-random-init`` and ``<name>:tib`` (if it has a tib recipe; each
    factory also takes ``recipe=`` and ``random_init=``). ``build(recipe)`` returns the network, randomly
    initialised (seeded by the caller), mapping (b, 1, D, H, W) float32 to (b, feature_dim)."""
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    entry = ZooEntry(model, build, batch_size)
    ZOO[model.name] = entry

    def factory(default_recipe: str, default_random: bool) -> Callable[..., ZooEncoder]:
        def make(weights: str | Path | None = None, *, recipe: str = default_recipe, random_init: bool = default_random, **options: Any) -> ZooEncoder:
            return build_encoder(entry, weights, recipe=recipe, random_init=random_init, **options)

        make.__doc__ = f"{model.title} ({'random-init control, ' if default_random else ''}recipe {default_recipe}); see lesionbench.baselines.zoo._zoo."
        return make

    origin = f"lesionbench.baselines ({model.name})"
    ENCODERS.add(model.name, factory("official", False), origin=origin)
    ENCODERS.add(f"{model.name}-random-init", factory("official", True), origin=origin)
    for r in model.recipes:  # e.g. ct-fm:tib, for the models TIB wraps
        if r.name != "official":
            ENCODERS.add(f"{model.name}:{r.name}", factory(r.name, False), origin=origin)
    return entry
