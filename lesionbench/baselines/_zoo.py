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
from lesionbench.benchmark.types import EncoderMeta, Intensity, PatchSpec

logger = logging.getLogger(__name__)

RECIPES = ("official", "tib")


@dataclass(frozen=True)
class Recipe:
    """How a model's input is prepared (the harness's ``seed-crop`` chain with these parameters).

    ``size`` and ``spacing_mm`` follow the axes of ``orientation``, the array the network sees (e.g. "SPL":
    (S, P, L)). ``interpolation`` is one of ``lesionbench.benchmark.types.INTERPOLATIONS`` ("none": the
    image's own voxel grid, with ``orientation="index"`` for ITK's (x, y, z) axes). ``embedding_dim`` and
    ``embedding_layer`` override the card's when this recipe takes another layer or size. ``source`` says
    where it comes from.
    """

    name: str
    orientation: str
    spacing_mm: tuple[float, float, float]
    size: tuple[int, int, int]
    intensity: Intensity
    pad_value: float = 0.0
    interpolation: str = "linear-align-corners"
    pad_before_intensity: bool = False
    diagonal: bool = True
    intensity_before_resample: bool = False
    embedding_dim: int | None = None
    embedding_layer: str = ""
    source: str = ""

    def patch_spec(self) -> PatchSpec:
        return PatchSpec(
            size=tuple(int(s) for s in self.size),  # type: ignore[arg-type]
            spacing_mm=tuple(float(s) for s in self.spacing_mm),  # type: ignore[arg-type]
            method="seed-crop",
            orientation=self.orientation,
            intensity=self.intensity,
            pad_value=float(self.pad_value),
            interpolation=self.interpolation,
            pad_before_intensity=self.pad_before_intensity,
            diagonal=self.diagonal,
            intensity_before_resample=self.intensity_before_resample,
        )

    def label(self) -> str:
        """One line: ``tib: 48x48x48 SPL at 1x1x1 mm, [-1024, 2048] -> [0, 1], clip``."""
        grid = "native grid" if self.interpolation == "none" else f"{'x'.join(f'{s:g}' for s in self.spacing_mm)} mm {self.interpolation}"
        order = " before resampling" if self.intensity_before_resample and self.interpolation != "none" else ""
        return f"{self.name}: {'x'.join(map(str, self.size))} {self.orientation} at {grid}, {self.intensity.label()}{order}"


def tib_recipe(orientation: str, *, size: int = 48, window: tuple[float, float] = (-1024.0, 2048.0), embedding_dim: int | None = None) -> Recipe:
    """TIB's recipe (``models/utils.py::get_transforms``): LPS, 1 mm linear (MONAI 1.4, align_corners=True),
    a ``size``^3 crop, ``orientation``, ``window`` -> [0, 1] clipped, zero padding."""
    return Recipe(
        name="tib",
        orientation=orientation,
        spacing_mm=(1.0, 1.0, 1.0),
        size=(size, size, size),
        intensity=Intensity("window", float(window[0]), float(window[1]), 0.0, 1.0, True),
        embedding_dim=embedding_dim,
        source="tumorimagingbench 0.1.4 models/utils.py get_transforms",
    )


@dataclass(frozen=True)
class WeightsFile:
    """A released weights file and how its keys map onto the network.

    ``containers``: keys tried, in order, to reach the state dict inside the checkpoint (a flat state dict
    is accepted too). ``prefix``: stripped from every kept key (a key without it is unexpected, unless no
    key has it: a file saved from the bare network). ``ignored``: fnmatch patterns of checkpoint keys
    (before the prefix is stripped) that are deliberately not loaded (decoders, heads); ``rename``:
    (old, new) substring replacements after stripping. ``safe_globals``: dotted names of the few non-tensor
    classes ``torch.load(weights_only=True)`` may rebuild (e.g. ``argparse.Namespace``).
    ``repo_id``/``revision``/``filename``: the pinned Hugging Face file (empty repo_id: no download; then
    ``url`` says where to get it). ``size``/``sha256``: known values, checked when set.
    """

    filename: str
    repo_id: str = ""
    revision: str = "main"
    url: str = ""
    containers: tuple[str, ...] = ("state_dict",)
    prefix: str = ""
    ignored: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    safe_globals: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None

    @property
    def where(self) -> str:
        if self.repo_id:
            return f"https://huggingface.co/{self.repo_id}/blob/{self.revision}/{self.filename}"
        return self.url or self.filename


@dataclass(frozen=True)
class ZooModel:
    """A model card: what a zoo encoder is, where its weights come from and how its input is prepared."""

    name: str
    title: str
    citation: str
    parameters: int
    embedding_dim: int
    embedding_layer: str
    pretraining_data: str
    code_licence: str
    weights_licence: str
    non_commercial: bool
    weights: WeightsFile
    recipes: tuple[Recipe, ...]
    network: str = ""
    version: str = "1.0"
    notes: str = ""
    #: Public datasets (names as tasks' ``data_sources`` spell them) the card says the weights were
    #: pre-trained on; None: not declared (the leaderboard then marks overlaps "unknown", never "no").
    pretraining_sets: tuple[str, ...] | None = None

    def recipe(self, name: str) -> Recipe:
        for r in self.recipes:
            if r.name == name:
                return r
        raise ConfigurationError(f"{self.name} has no recipe {name!r}; it has {[r.name for r in self.recipes]}.")

    def display_name(self, recipe: str = "official", *, random_init: bool = False) -> str:
        """``ct-fm``, ``ct-fm:tib``, ``ct-fm-random-init``, ``ct-fm-random-init:tib``."""
        base = f"{self.name}-random-init" if random_init else self.name
        return base if recipe == "official" else f"{base}:{recipe}"

    def feature_dim(self, recipe: str = "official") -> int:
        return int(self.recipe(recipe).embedding_dim or self.embedding_dim)

    def layer(self, recipe: str = "official") -> str:
        return self.recipe(recipe).embedding_layer or self.embedding_layer

    def card_items(self, recipe: str = "official", *, weights_sha256: str = "", tensors_loaded: int | None = None) -> tuple[tuple[str, str], ...]:
        """The card as (key, value) pairs for ``EncoderMeta.card`` (result.json, MLflow params, the page)."""
        r = self.recipe(recipe)
        items = [
            ("model", self.title),
            ("network", self.network),
            ("parameters", f"{self.parameters:,}"),
            ("embedding", f"{self.feature_dim(recipe)}-d, {self.layer(recipe)}"),
            ("recipe", r.label()),
            ("pretraining_data", self.pretraining_data),
            ("pretraining_sets", "; ".join(self.pretraining_sets) if self.pretraining_sets is not None else ""),
            ("code_licence", self.code_licence),
            ("weights_licence", self.weights_licence + (" (NON-COMMERCIAL)" if self.non_commercial else "")),
            ("non_commercial", "yes" if self.non_commercial else "no"),
            ("weights_file", self.weights.where),
            ("weights_sha256", weights_sha256),
        ]
        if tensors_loaded is not None:
            items.append(("tensors_loaded", str(tensors_loaded)))
        return tuple((k, v) for k, v in items if v)


# the audited loading lives in _zoo_load; re-exported here, the one module encoder files import
from lesionbench.baselines.zoo._load import audit, check_finite, load_audited, read_checkpoint, read_checkpoint_and_digest, unwrap  # noqa: E402, F401


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
