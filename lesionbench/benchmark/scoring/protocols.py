"""Evaluation protocols: how an encoder's features meet the labels. An entry's identity includes its protocol.

* ``"linear"`` - frozen features, the linear probe, limited-label fractions (the FMCIB protocol; default);
* ``"knn"`` - frozen features, the k-NN probe (:mod:`lesionbench.benchmark.scoring.probes.knn`), fractions;
* ``"k-shot"`` - frozen features, k labelled lesions per class or a total budget
  (:mod:`lesionbench.benchmark.scoring.shots`), either probe;
* ``"finetune"`` - the encoder's own network trained end to end on each training subset
  (:mod:`lesionbench.baselines.finetune`), then either probe on its features, fractions.

The protocol is written to ``result.json`` (``extra["protocol"]``; results without it are ``"linear"``
or ``"knn"`` by their probe) and is part of the result folder (:func:`protocol_dir`), of the resume key,
of the MLflow params and tags, and of the leaderboard's entry identity: results of different protocols
are never ranked together.
"""

from __future__ import annotations

from typing import Any

from lesionbench.benchmark.errors import ConfigurationError

PROTOCOLS: tuple[str, ...] = ("linear", "knn", "k-shot", "finetune")
#: Adaptations of an encoder before probing (``--adapt``).
ADAPTATIONS: tuple[str, ...] = ("finetune",)


def protocol_name(probe: str, *, shots: bool = False, adapt: str | None = None) -> str:
    """The protocol of a sweep: ``adapt`` first, then k-shot, else the probe's own name."""
    if adapt is not None and adapt not in ADAPTATIONS:
        raise ConfigurationError(f"Unknown adaptation {adapt!r}; available: {', '.join(ADAPTATIONS)} (or none, for frozen features).")
    if adapt and shots:
        raise ConfigurationError("Fine-tuning (--adapt finetune) runs on the label fractions, not on k-shot sets; leave out --shots / --shots-total, or --adapt.")
    return adapt or ("k-shot" if shots else probe)


def protocol_dir(protocol: str, probe: str) -> str:
    """The result-folder name below the encoder: the probe for frozen-feature fractions (``linear``, ``knn``),
    else ``<protocol>-<probe>`` (``k-shot-linear``, ``finetune-knn``), so no two protocols share a folder."""
    return probe if protocol == probe else f"{protocol}-{probe}"


def protocol_of(result: Any) -> str:
    """The protocol of a :class:`~lesionbench.benchmark.types.TaskResult` (older results: the probe's name)."""
    return str(result.extra.get("protocol") or result.probe)


def protocol_key(result: Any) -> str:
    """Protocol and probe of a result in one name (its folder name: ``linear``, ``knn``, ``k-shot-linear``,
    ``finetune-knn`` ...): the leaderboard ranks only results of the same key together."""
    return protocol_dir(protocol_of(result), result.probe)


__all__ = ["ADAPTATIONS", "PROTOCOLS", "protocol_dir", "protocol_key", "protocol_name", "protocol_of"]
