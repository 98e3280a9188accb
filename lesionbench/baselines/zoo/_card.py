"""The zoo's model cards: :class:`ZooModel` (citation, parameters, embedding layer, pre-training data,
licences, the released :class:`WeightsFile` with its container and key layout, the keys deliberately
ignored) and its ``official`` and ``tib`` :class:`Recipe`. Plain data, shared by the encoder factory
(:mod:`._zoo`), audited loading (:mod:`._load`) and the weights downloads (:mod:`._weights`)."""

from __future__ import annotations

from dataclasses import dataclass

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.types import Intensity, PatchSpec

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
