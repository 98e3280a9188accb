"""The zoo as a catalogue: ``lesionbench encoders list``, the demo's plan, and the CLI's encoder choice.

Nothing here touches the network or hashes weights: "present" means the card's file is in the weights
cache folder (``_zoo_weights.present``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lesionbench.benchmark.errors import ConfigurationError


@dataclass(frozen=True)
class CatalogRow:
    """One line of ``lesionbench encoders list``."""

    name: str
    recipe: str
    embedding: str
    licence: str
    non_commercial: bool
    weights: str


def _zoo() -> dict[str, Any]:
    from lesionbench.baselines.zoo._zoo import ZOO
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    ENCODERS.names()  # imports every built-in encoder module, which registers the zoo
    return dict(sorted(ZOO.items()))


def rows() -> list[CatalogRow]:
    """Every registered encoder: zoo models per recipe and control, then the others."""
    from lesionbench.baselines.zoo import _weights as _zoo_weights
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    out: list[CatalogRow] = []
    zoo_names: set[str] = set()
    for entry in _zoo().values():
        m = entry.model
        found = _zoo_weights.present(m)
        state = f"present ({found})" if found else f"absent: {m.weights.filename} from {m.weights.where}"
        licence = f"code {m.code_licence}; weights {m.weights_licence}"
        for recipe in (r.name for r in m.recipes):
            for control in (False, True):
                name = m.display_name(recipe, random_init=control)
                zoo_names.add(name)
                out.append(
                    CatalogRow(
                        name=name,
                        recipe=m.recipe(recipe).label(),
                        embedding=str(m.feature_dim(recipe)),
                        licence=licence,
                        non_commercial=m.non_commercial and not control,
                        weights="not needed (seeded random weights)" if control else state,
                    )
                )
    for name in ENCODERS.names():
        if name not in zoo_names:
            out.append(_builtin_row(name))
    return out


def _builtin_row(name: str) -> CatalogRow:
    if name in ("fmcib", "fmcib-random-init"):
        from lesionbench.baselines import fmcib

        path = fmcib.weights_dir() / fmcib.WEIGHTS_FILENAME
        weights = "not needed (seeded random weights)" if name.endswith("random-init") else (
            f"present ({path})" if path.is_file() else f"absent: {fmcib.WEIGHTS_FILENAME} from {fmcib.WEIGHTS_URL}"
        )
        return CatalogRow(name, "fmcib reference get_features (50^3, 1 mm)", str(fmcib.FEATURE_DIM), "see AIM-Harvard/foundation-cancer-image-biomarker", False, weights)
    return CatalogRow(name, "-", "-", "-", False, "not needed")


#: Declared pre-training sets of the built-in encoders that have no zoo card (names as tasks' ``data_sources``
#: or :mod:`lesionbench.tasks._sources`'s aliases spell them). FMCIB's weights were pre-trained on
#: DeepLesion's 11,467 lesions (Pai et al. 2024); the random-init controls see no data; the supervised CNNs
#: are trained on each task's own training split (no public set beyond the task; the split never holds a
#: test lesion); radiomics is computed, not learned.
BUILTIN_PRETRAINING: dict[str, tuple[str, ...]] = {
    "fmcib": ("DeepLesion",),
    "fmcib-random-init": (),
    "supervised-cnn": (),
    "supervised-resnet50": (),
    "radiomics": (),
}
#: What the built-in encoders without a zoo card learned from, in words (the page's "pre-trained:" note).
BUILTIN_PRETRAINING_DATA: dict[str, str] = {
    "fmcib": "DeepLesion: 11,467 CT lesions, self-supervised contrastive",
    "fmcib-random-init": "none: seeded random weights",
    "supervised-cnn": "none: trained on the task's own training split only",
    "supervised-resnet50": "none: trained on the task's own training split only",
    "radiomics": "none: hand-crafted PyRadiomics features",
}


def pretraining_data(name: str) -> str | None:
    """In words, what a built-in encoder without a zoo card learned from (None for others: their card says it)."""
    base = name.split(":", 1)[0]
    if base in BUILTIN_PRETRAINING_DATA:
        return BUILTIN_PRETRAINING_DATA[base]
    return "none: seeded random weights" if base.endswith("-random-init") else None


def pretraining_sets(name: str, card: dict[str, str] | None = None) -> frozenset[str] | None:
    """The public datasets encoder ``name`` was pre-trained on: the result's card (``pretraining_sets``),
    else the zoo card or :data:`BUILTIN_PRETRAINING`; random-init controls none; None when undeclared."""
    if card and "pretraining_sets" in card:
        return frozenset(s.strip() for s in str(card["pretraining_sets"]).split(";") if s.strip())
    if name in BUILTIN_PRETRAINING:
        return frozenset(BUILTIN_PRETRAINING[name])
    base = name.split(":", 1)[0]
    if base.endswith("-random-init"):
        return frozenset()
    entry = _zoo().get(base)
    if entry is None or entry.model.pretraining_sets is None:
        return None
    return frozenset(entry.model.pretraining_sets)


def format_rows(table: list[CatalogRow]) -> str:
    """A plain-text table, non-commercial weights flagged (embedding layers: docs/zoo.md and each card)."""
    head = ("encoder", "recipe", "embedding", "licence", "weights")
    lines = [(r.name, r.recipe, r.embedding, r.licence + (" [NON-COMMERCIAL]" if r.non_commercial else ""), r.weights) for r in table]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if i < 4 else 0 for i, h in enumerate(head)]
    fmt = lambda cols: "  ".join(c.ljust(w) if w else c for c, w in zip(cols, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), *(fmt(line) for line in lines)])


def demo_plan(full: bool) -> tuple[list[str], dict[str, str]]:
    """Zoo encoders the demo runs (those whose weights are present; with ``full`` also every random-init
    control) and one short line per zoo model it skips."""
    from lesionbench.baselines.zoo import _weights as _zoo_weights

    run: list[str] = []
    skipped: dict[str, str] = {}
    for name, entry in _zoo().items():
        if _zoo_weights.present(entry.model) is not None:
            run.append(name)
        else:
            skipped[name] = f"weights {entry.model.weights.filename} not found locally (get them from {entry.model.weights.where}; see `lesionbench encoders list`)"
        if full:
            run.append(entry.model.display_name("official", random_init=True))
    return run, skipped


def encoder_choice(name: str, *, recipe: str | None, random_init: bool, weights: Any = None) -> tuple[str, dict[str, Any]]:
    """The registry name and options for the CLI's ``--encoder NAME [--recipe R] [--random-init]``:
    ``--random-init`` picks ``<name>-random-init`` (``ct-fm:tib`` -> ``ct-fm-random-init`` with recipe tib)."""
    from lesionbench.benchmark.encoders.plugins import ENCODERS

    base, _, suffix = name.partition(":")
    if suffix and recipe and suffix != recipe:
        raise ConfigurationError(f"--encoder {name} names the recipe {suffix!r} but --recipe is {recipe!r}; give one of them.")
    recipe = recipe or (suffix or None)
    if random_init:
        if weights is not None:
            raise ConfigurationError("--random-init builds seeded random weights; leave out --weights.")
        control = base if base.endswith("-random-init") else f"{base}-random-init"
        if control not in ENCODERS:
            raise ConfigurationError(f"Encoder {name!r} has no random-init control ({control!r} is not registered).")
        base = control
    return base, ({"recipe": recipe} if recipe else {})
