"""Where a zoo model's weights come from, and proof that they are the ones recorded.

``weights=PATH`` (a file, or a folder holding the card's file) is hashed as given. Otherwise the card's
file is looked up at ``<weights dir>/<model name>/<filename>`` (``$LESIONBENCH_WEIGHTS`` or
``$LESIONBENCH_CACHE/weights``); if absent it is downloaded with ``huggingface_hub.hf_hub_download`` from
the pinned repository, revision and file name. On first download its size and sha256 are recorded in
``<filename>.sha256.json`` (checked against the card's known size/sha256 when set) and verified on every
later load. Offline (``HF_HUB_OFFLINE=1``, ``LESIONBENCH_OFFLINE=1`` or no network) without the file:
one :class:`WeightsMissingError` naming the file and where to get it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from lesionbench.baselines.zoo._card import ZooModel
from lesionbench.benchmark.errors import WeightsError
from lesionbench.benchmark.paths import OFFLINE_ENV, offline, weights_dir  # noqa: F401 (OFFLINE_ENV: public here too)
from lesionbench.benchmark.host import atomic_write, sha256_file


logger = logging.getLogger(__name__)

#: Set to 1 to never download (as ``HF_HUB_OFFLINE``).


class WeightsMissingError(WeightsError, FileNotFoundError):
    """A model's weights are neither given nor cached, and cannot be downloaded here (offline)."""


def model_dir(model: ZooModel) -> Path:
    return weights_dir() / model.name


def how_to_get(model: ZooModel) -> str:
    w = model.weights
    dest = model_dir(model) / w.filename
    size = f", {w.size:,} bytes" if w.size else ""
    return (
        f"Download {w.filename} ({w.where}{size}) on a machine with internet access and pass it with --weights PATH "
        f"(python: get_encoder({model.name!r}, weights=PATH)), or put it at {dest}."
    )


def _control(model: ZooModel) -> str:
    """Where the weights cannot be had: the random-init control still runs (every zoo model registers one)."""
    return (f" Without them, --random-init ({model.display_name(random_init=True)}) runs the same architecture with seeded random "
            "weights: the control for what pre-training adds.")  # fmt: skip


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def present(model: ZooModel) -> Path | None:
    """The cached weights file of ``model`` if it is on disk (no network, no hashing)."""
    path = model_dir(model) / model.weights.filename
    return path if path.is_file() else None


def _offline() -> bool:
    return offline()


def _reachable() -> bool:
    """Whether the Hugging Face endpoint's host name resolves: offline machines fail here at once instead of
    after huggingface_hub's retries with back-off (~25 s of warnings)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def download(model: ZooModel, *, progress: bool = True) -> Path:
    """Fetch the card's pinned file into :func:`model_dir`, check it against the card's known size and
    sha256 (when set), and record its size and sha256 next to it."""
    w = model.weights
    dest = model_dir(model) / w.filename
    if not w.repo_id:
        raise WeightsMissingError(f"{model.name}: weights file {dest} not found and it has no pinned download. {how_to_get(model)}")
    if _offline():
        raise WeightsMissingError(f"{model.name}: weights file {dest} not found and {OFFLINE_ENV}/HF_HUB_OFFLINE forbids the download. "
                                  f"{how_to_get(model)}{_control(model)}")  # fmt: skip
    if not _reachable():
        raise WeightsMissingError(f"{model.name}: weights file {dest} not found and Hugging Face cannot be reached (offline). {how_to_get(model)}{_control(model)}")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError as exc:
        raise WeightsMissingError(f"{model.name}: huggingface_hub is not installed, so {w.filename} cannot be downloaded. {how_to_get(model)}") from exc
    staging = dest.parent / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s weights %s@%s/%s", model.name, w.repo_id, w.revision, w.filename)
    try:
        if not progress:
            disable_progress_bars()
        got = Path(hf_hub_download(repo_id=w.repo_id, filename=w.filename, revision=w.revision, local_dir=staging))
    except Exception as exc:  # huggingface_hub raises many types (HTTP, offline, missing revision): all mean "not here"
        raise WeightsMissingError(f"{model.name}: could not download {w.where} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). {how_to_get(model)}") from exc
    finally:
        if not progress:
            enable_progress_bars()
    size, digest = got.stat().st_size, sha256_file(got)
    for what, want, have in (("size", w.size, size), ("sha256", w.sha256, digest)):
        if want is not None and want != have:
            got.unlink(missing_ok=True)
            raise WeightsError(f"{model.name}: the downloaded {w.filename} has {what} {have}, the card pins {want}: not kept. {how_to_get(model)}")
    os.replace(got, dest)
    shutil.rmtree(staging, ignore_errors=True)
    record = {"file": dest.name, "size": size, "sha256": digest, "source": w.where, "revision": w.revision}
    atomic_write(_sidecar(dest), lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return dest


def verify(model: ZooModel, path: Path, digest: str | None = None) -> str:
    """sha256 of a cached weights file (``digest`` when the caller already has it from reading the file),
    checked against the size and digest recorded at download."""
    side = _sidecar(path)
    digest = digest or sha256_file(path)
    if not side.is_file():  # placed by hand: recorded now, verified from now on
        record = {"file": path.name, "size": path.stat().st_size, "sha256": digest, "source": "found in cache"}
        atomic_write(side, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        return digest
    try:
        recorded = json.loads(side.read_text())
        want_size, want = int(recorded["size"]), str(recorded["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"Corrupt digest record {side}: delete it and {path} to download again.") from exc
    if path.stat().st_size != want_size or digest != want:
        raise WeightsError(
            f"The cached {model.name} weights {path} have {path.stat().st_size:,} bytes and sha256 {digest}, but "
            f"{want_size:,} bytes and {want} were recorded when they were downloaded: the file changed or is damaged. "
            f"Delete {path} and {side} to download again, or {how_to_get(model)}"
        )
    return digest


def locate(model: ZooModel, weights: str | Path | None, *, progress: bool = True) -> tuple[Path, bool]:
    """The weights file to load for ``model`` (``weights``, else the cache, else a download) and whether it is
    the managed cache copy, whose digest must match the one recorded at download."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            if not (path / model.weights.filename).is_file():
                raise WeightsError(f"{path} is a folder without {model.weights.filename}; give the weights file itself. {how_to_get(model)}")
            path = path / model.weights.filename
        if not path.is_file():
            raise WeightsMissingError(f"{model.name} weights file not found: {path}. {how_to_get(model)}")
        return path, False
    path = present(model)
    if path is None:
        path = download(model, progress=progress)
    return path, True


def resolve(model: ZooModel, weights: str | Path | None, *, progress: bool = True) -> tuple[Path, str]:
    """The weights file to load for ``model`` and its sha256 (see the module docstring)."""
    path, managed = locate(model, weights, progress=progress)
    # from the content, every time: a swapped file never reuses a digest
    return path, (verify(model, path) if managed else sha256_file(path))
