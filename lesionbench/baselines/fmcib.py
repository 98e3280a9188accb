"""FMCIB: the foundation model for cancer imaging biomarkers (Pai et al., Nat. Mach. Intell. 2024).

Citation: S. Pai et al., "Foundation model for cancer imaging biomarkers", Nature Machine Intelligence 6,
354-367 (2024), doi:10.1038/s42256-024-00807-9. Weights: Zenodo record 10528450 (``model_weights.torch``),
released by the authors under their repository's licence (AIM-Harvard/foundation-cancer-image-biomarker).

Two registry entries:

- ``fmcib``: the released weights (``weights=PATH``; else ``$LESIONBENCH_WEIGHTS`` if it names the file;
  otherwise downloaded on first use into ``$LESIONBENCH_WEIGHTS`` (a folder) or
  ``$LESIONBENCH_CACHE/weights``, checked against its size and the md5 the Zenodo record publishes, its sha256 recorded in a sidecar file
  ``model_weights.torch.sha256.json`` and verified on every later load).
- ``fmcib-random-init``: the same architecture with seeded random weights, a labelled control that
  shows what the pre-training itself contributes.

The trunk is ``monai.networks.nets.resnet50(n_input_channels=1, widen_factor=2, conv1_t_stride=2,
feed_forward=False, bias_downsample=True)``: 4096 features after global average pooling (rebuilt layer for
layer in :mod:`lesionbench.baselines._resnet3d`, because ``import monai`` alone costs ~3 s). Patches are
cut by :mod:`lesionbench.benchmark.data.geometry` exactly as the reference ``get_features`` does.
Weight loading is audited: every trunk key must be present with the right shape and nothing else may be
in the checkpoint (the reference loads with ``strict=False`` and silently keeps random weights), and no
parameter may be NaN or infinite. The weights digest in the encoder's fingerprint (which keys the feature
cache) is the sha256 of the bytes loaded, computed on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lesionbench.benchmark.errors import ConfigurationError, WeightsError
from lesionbench.benchmark.host import atomic_write, inference_device, sha256_file
from lesionbench.benchmark.paths import OFFLINE_ENV, WEIGHTS_ENV, cache_root, weights_dir  # noqa: F401 (weights_dir: public here too)
from lesionbench.benchmark.encoders.plugins import ENCODERS
from lesionbench.benchmark.types import EncoderMeta, PatchSpec
from lesionbench.benchmark.encoders.weights import check_finite_state_dict, read_checkpoint
from lesionbench.benchmark.encoders.weights import load_checkpoint as load_torch_checkpoint  # fmcib.load_checkpoint stays public

logger = logging.getLogger(__name__)

VERSION = "1.0"
FEATURE_DIM = 4096
WEIGHTS_URL = "https://zenodo.org/records/10528450/files/model_weights.torch?download=1"
WEIGHTS_FILENAME = "model_weights.torch"
#: The Zenodo record's metadata: it lists each file's checksum ("md5:<hex>"), which a download is checked against.
RECORD_API = "https://zenodo.org/api/records/10528450"
WEIGHTS_SIZE = 738_451_713
#: Environment variable naming the folder (or file) of downloaded weights.
CITATION = (
    "Pai S, Bontempi D, Hadzic I, et al. Foundation model for cancer imaging biomarkers. "
    "Nat Mach Intell 6, 354-367 (2024). doi:10.1038/s42256-024-00807-9"
)
PATCH = PatchSpec(size=(50, 50, 50), spacing_mm=(1.0, 1.0, 1.0), method="fmcib", with_mask=False)


def build_trunk():
    """The FMCIB trunk, exactly as the reference builds it (random initialisation): MONAI's
    ``resnet50(pretrained=False, n_input_channels=1, widen_factor=2, conv1_t_stride=2, feed_forward=False,
    bias_downsample=True)``, built by :mod:`lesionbench.baselines._resnet3d` without importing MONAI
    (same keys, same random weights after the same seed, bitwise-identical features; tested against MONAI)."""
    from lesionbench.baselines._resnet3d import resnet50

    return resnet50(n_input_channels=1, widen_factor=2, conv1_t_stride=2, bias_downsample=True)


def _uninitialised_trunk():
    """The trunk on the meta device without running its initialisers: every weight comes from the
    checkpoint. (Initialisers on meta tensors would import torch._dynamo, ~1.5 s, for nothing.) The
    initialisers are swapped out only for the duration of the construction."""
    import torch
    from torch.nn import init

    names = ("kaiming_normal_", "kaiming_uniform_", "constant_", "ones_", "zeros_", "uniform_", "normal_")
    saved = {k: getattr(init, k) for k in names}

    def keep(tensor, *args, **kwargs):
        return tensor

    try:
        for k in names:
            setattr(init, k, keep)
        with torch.device("meta"):
            return build_trunk()
    finally:
        for k, v in saved.items():
            setattr(init, k, v)


# ------------------------------------------------------------------------------------ weights
def _how_to_get() -> str:
    return (
        f"Download {WEIGHTS_URL} ({WEIGHTS_SIZE:,} bytes; also on Hugging Face surajpaib/FMCIB) on a machine "
        f"with internet access and pass it with --weights PATH (python: get_encoder('fmcib', weights=PATH)), "
        f"or put it at {weights_dir() / WEIGHTS_FILENAME}."
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def publisher_checksum(record_url: str | None = None, filename: str = WEIGHTS_FILENAME) -> str | None:
    """The checksum Zenodo publishes for ``filename`` (e.g. ``"md5:<hex>"``), or None when the record
    cannot be read (then the download is checked by its size only, and a warning says so)."""
    try:
        with urllib.request.urlopen(record_url or RECORD_API, timeout=30) as resp:
            record = json.loads(resp.read(1 << 22))
        files = record.get("files") or []
        entry = next(f for f in files if isinstance(f, dict) and filename in (f.get("key"), f.get("filename")))
        checksum = str(entry["checksum"])
        algo, _, hexdigest = checksum.partition(":")
        if algo not in ("md5", "sha256") or not hexdigest:
            raise ValueError(f"unknown checksum form {checksum!r}")
        return checksum
    except (urllib.error.URLError, OSError, TimeoutError, ValueError, KeyError, StopIteration, AttributeError) as exc:
        logger.warning("Could not read the published checksum of %s from %s (%s); the download is checked by its size only.",
                       filename, record_url or RECORD_API, exc)  # fmt: skip
        return None


def download_weights(
    dest: Path | None = None, *, url: str | None = None, expected_size: int | None = None, record_url: str | None = None, progress: bool = True
) -> Path:
    """Download the released weights into ``dest`` (default :func:`weights_dir`), with a progress bar, a
    size check, a check against the checksum Zenodo publishes for the file, and a sha256 sidecar that
    later loads are verified against. Raises :class:`WeightsError` when offline or when a check fails."""
    from tqdm.auto import tqdm

    url = url or WEIGHTS_URL
    expected_size = WEIGHTS_SIZE if expected_size is None else expected_size
    dest = dest or weights_dir() / WEIGHTS_FILENAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    logger.info("Downloading FMCIB weights from %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or expected_size)
            h, h_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)  # md5: what Zenodo publishes
            with tqdm(total=total, unit="B", unit_scale=True, desc="FMCIB weights", disable=not progress) as bar:
                while b := resp.read(1 << 20):
                    out.write(b)
                    h.update(b)
                    h_md5.update(b)
                    bar.update(len(b))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise WeightsError(f"Could not download the FMCIB weights from {url} ({type(exc).__name__}: {exc}). {_how_to_get()}") from exc
    size = part.stat().st_size
    if size != expected_size:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"The FMCIB weights downloaded from {url} have {size:,} bytes, expected {expected_size:,} (truncated or "
            f"changed download). Retry, or {_how_to_get()}"
        )
    published = publisher_checksum(record_url)
    if published:
        algo, _, want = published.partition(":")
        got = (h_md5 if algo == "md5" else h).hexdigest()
        if got != want.lower():
            part.unlink(missing_ok=True)
            raise WeightsError(
                f"The FMCIB weights downloaded from {url} have {algo} {got}, but the Zenodo record publishes {published}: "
                f"a damaged or altered download, not kept. Retry, or {_how_to_get()}"
            )
    os.replace(part, dest)
    record = {"file": dest.name, "size": size, "sha256": h.hexdigest(), "source": url, "publisher_checksum": published}
    atomic_write(_sidecar(dest), lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    return dest


def _locate_weights(weights: str | Path | None, *, progress: bool = True) -> tuple[Path, bool]:
    """The weights file to load, and whether it is the managed download (whose digest has a sidecar record).

    An explicit path is used as is; otherwise the cached download (downloaded on first use)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():  # a folder holding the released file
            if not (path / WEIGHTS_FILENAME).is_file():
                raise WeightsError(f"{path} is a folder without {WEIGHTS_FILENAME}; give the weights file itself. {_how_to_get()}")
            path = path / WEIGHTS_FILENAME
        if not path.is_file():
            raise WeightsError(f"FMCIB weights file not found: {path}. {_how_to_get()}")
        return path, False
    env = os.environ.get(WEIGHTS_ENV)
    path = Path(env).expanduser() if env and Path(env).expanduser().is_file() else weights_dir() / WEIGHTS_FILENAME
    if not path.is_file():
        from lesionbench.benchmark.paths import offline as _offline

        if _offline():  # as for the zoo's weights: never a download attempt while told to stay offline
            raise WeightsError(f"FMCIB weights are not at {path} and {OFFLINE_ENV}/HF_HUB_OFFLINE forbids the download. {_how_to_get()} "
                               "Without them, `--random-init` (fmcib-random-init) runs the same network with seeded random weights.")  # fmt: skip
        path = download_weights(path, progress=progress)
    return path, True


def _check_recorded(path: Path, digest: str) -> None:
    """Compare the managed download's digest with the one recorded at download time (record it if absent)."""
    side = _sidecar(path)
    if side.is_file():
        try:
            recorded = json.loads(side.read_text())["sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"Corrupt digest record {side}: delete it and {path} to download again.") from exc
        if recorded != digest:
            raise WeightsError(
                f"The cached FMCIB weights {path} have sha256 {digest}, but {recorded} was recorded when they were "
                f"downloaded: the file changed or is damaged. Delete {path} and {side} to download again, or {_how_to_get()}"
            )
    else:
        record = {"file": path.name, "size": path.stat().st_size, "sha256": digest, "source": "found in cache"}
        atomic_write(side, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))


def resolve_weights(weights: str | Path | None, *, progress: bool = True) -> tuple[Path, str]:
    """The weights file to load and the sha256 of its content.

    The digest is computed from the file every time (0.16-0.7 s per 300 MB on the 2-core machine, see
    ``benchmarks/weights_digest.py``): a digest
    remembered by path, size and modification time let another checkpoint of the same size, copied in
    with an old mtime, reuse the first one's cached features. The cached download is also checked
    against the digest recorded when it was downloaded.
    """
    path, managed = _locate_weights(weights, progress=progress)
    digest = sha256_file(path)
    if managed:
        _check_recorded(path, digest)
    return path, digest


def trunk_state_dict(checkpoint: Any, *, source: str = "checkpoint") -> dict[str, Any]:
    """The trunk weights of a checkpoint: the released ``{"trunk_state_dict": ...}`` format or a Lighter
    training checkpoint ``{"state_dict": {"model.trunk.<key>": ...}}`` (heads are ignored)."""
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{source} holds a {type(checkpoint).__name__}, not a checkpoint dictionary. Is it an FMCIB weights file?")
    if "trunk_state_dict" in checkpoint:
        sd = checkpoint["trunk_state_dict"]
        if not isinstance(sd, Mapping):
            raise WeightsError(f"{source}: 'trunk_state_dict' is a {type(sd).__name__}, not a state dict.")
        return dict(sd)
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        prefix = "model.trunk."
        sd = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        if not sd:
            keys = list(checkpoint["state_dict"])[:5]
            raise WeightsError(f"{source}: a Lighter checkpoint without '{prefix}*' keys (first keys: {keys}). It holds no FMCIB trunk.")
        return sd
    raise WeightsError(
        f"{source}: neither 'trunk_state_dict' (released FMCIB weights) nor 'state_dict' (Lighter checkpoint) found; "
        f"top-level keys: {list(checkpoint)[:10]}. Use the released model_weights.torch or a Lighter checkpoint of FMCIB."
    )


def load_trunk_weights(trunk, state_dict: Mapping[str, Any], *, source: str = "checkpoint", assign: bool = False) -> int:
    """Load ``state_dict`` into ``trunk`` strictly; return the number of tensors loaded.

    Every missing, unexpected or mis-shaped key is reported by name in one :class:`WeightsError`, and
    every tensor holding NaN or infinite values in a :class:`~lesionbench.benchmark.encoders.weights.NonFiniteWeightsError`.
    ``assign=True`` adopts the checkpoint's tensors (for a trunk built on the meta device: no random
    initialisation, no second copy); they are cast to the trunk's dtypes.
    """
    from lesionbench.benchmark.encoders.weights import key_problems

    expected = trunk.state_dict()
    problems = key_problems(expected, state_dict)
    if problems:
        raise WeightsError(
            f"{source} does not fit the FMCIB trunk (resnet50, widen_factor=2, {len(expected)} keys): " + "; ".join(problems)
            + ". Use the released model_weights.torch or a Lighter checkpoint of the same architecture."
        )
    check_finite_state_dict(state_dict, source)
    sd = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state_dict.items()}
    trunk.load_state_dict(sd, strict=True, assign=assign)
    return len(sd)


def load_checkpoint(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with one clear :class:`WeightsError` for any file that is not a
    checkpoint (:func:`lesionbench.benchmark.encoders.weights.load_checkpoint`)."""
    return load_torch_checkpoint(path, hint=_how_to_get())


# ------------------------------------------------------------------------------------ encoder
class FMCIBEncoder:
    """The FMCIB trunk as a lesionbench patch encoder: (n, 1, 50, 50, 50) -> (n, 4096) float32.

    ``device`` defaults to CUDA when available, else CPU with all cores (``threads``). ``batch_size``
    defaults to 16: on CPU a forward pass of 16 patches costs clearly less per patch than one of 4 or 8
    (the features are bitwise the same for any batch size). ``bf16`` runs the
    forward pass under bfloat16 autocast (about 0.4% feature change; recorded in ``meta.settings`` so
    its features are cached apart).
    """

    batch_size: int

    def __init__(self, trunk, meta: EncoderMeta, *, device: str | None = None, bf16: bool = False, batch_size: int = 16, threads: int | None = None):
        # all cores this process may use unless given (the reference leaves torch's default)
        self.device, self.threads = inference_device(device, threads)
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.bf16 = bool(bf16)
        self.trunk = trunk.to(self.device).eval()
        self.meta = meta

    def torch_module(self):
        """The trunk (patches (n, 1, 50, 50, 50) -> (n, 4096)): what ``--adapt finetune`` copies and trains
        (:mod:`lesionbench.baselines.finetune`); this encoder's own weights are never changed."""
        return self.trunk

    def encode(self, patches: np.ndarray) -> np.ndarray:
        """Features of ``patches`` (n, 1, D, H, W) in input order, float32, computed in batches."""
        import torch

        x = np.asarray(patches)
        if x.ndim != 5 or x.shape[1] != 1:
            raise ConfigurationError(f"FMCIB encodes patches shaped (n, 1, D, H, W); got {x.shape}.")
        out = np.empty((x.shape[0], self.meta.feature_dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, x.shape[0], self.batch_size):
                part = np.ascontiguousarray(x[s : s + self.batch_size], dtype=np.float32)
                batch = torch.from_numpy(part if part.flags.writeable else part.copy()).to(self.device)
                if self.bf16:
                    with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                        f = self.trunk(batch)
                else:
                    f = self.trunk(batch)
                out[s : s + len(batch)] = f.float().reshape(len(batch), -1).cpu().numpy()
        return out


def _settings(bf16: bool, extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    return (("precision", "bf16-autocast" if bf16 else "float32"),) + extra


@ENCODERS.register("fmcib")
def fmcib(weights: str | Path | None = None, *, device: str | None = None, bf16: bool = False, batch_size: int = 16, threads: int | None = None, progress: bool = True) -> FMCIBEncoder:
    """FMCIB with the released (or given) weights; see the module docstring."""

    path, managed = _locate_weights(weights, progress=progress)
    checkpoint, digest = read_checkpoint(path, hint=_how_to_get())  # the digest of the bytes loaded
    if managed:
        _check_recorded(path, digest)
    trunk = _uninitialised_trunk()  # every weight comes from the file
    n = load_trunk_weights(trunk, trunk_state_dict(checkpoint, source=str(path)), source=str(path), assign=True)
    logger.info("FMCIB: loaded %d trunk tensors from %s (sha256 %s)", n, path, digest[:12])
    meta = EncoderMeta(
        name="fmcib",
        version=VERSION,
        feature_dim=FEATURE_DIM,
        patch=PATCH,
        weights_sha256=digest,
        description="FMCIB 3D ResNet-50 (widen 2) self-supervised on 11,467 CT lesions; reference get_features preprocessing.",
        citation=CITATION,
        settings=_settings(bf16),
    )
    return FMCIBEncoder(trunk, meta, device=device, bf16=bf16, batch_size=batch_size, threads=threads)


@ENCODERS.register("fmcib-random-init")
def fmcib_random_init(seed: int = 0, *, device: str | None = None, bf16: bool = False, batch_size: int = 16, threads: int | None = None) -> FMCIBEncoder:
    """Control: the FMCIB architecture and preprocessing with seeded random weights (no pre-training)."""
    import torch

    # a private generator state: never touch the caller's global seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        trunk = build_trunk()
    return FMCIBEncoder(trunk, random_init_meta(seed, bf16=bf16), device=device, bf16=bf16, batch_size=batch_size, threads=threads)


def random_init_meta(seed: int = 0, *, bf16: bool = False) -> EncoderMeta:
    """The metadata of ``fmcib-random-init`` (seeded MONAI initialisation; same seed, same weights)."""
    return EncoderMeta(
        name="fmcib-random-init",
        version=VERSION,
        feature_dim=FEATURE_DIM,
        patch=PATCH,
        weights_sha256=f"random-init-seed-{int(seed)}",
        description="Control: FMCIB architecture and preprocessing with random weights (torch.manual_seed(seed), MONAI init).",
        citation=CITATION,
        settings=_settings(bf16, (("seed", str(int(seed))),)),
    )
