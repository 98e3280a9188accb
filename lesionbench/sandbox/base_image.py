"""The sandbox base image: a Debian root filesystem with python3, lesionbench and its feature-extraction
dependencies, built locally from ``mmdebstrap`` (no image registry is ever contacted).

The recipe (:data:`RECIPE_VERSION`) is:

1. a wheelhouse: lesionbench built from its source tree (``pip wheel --no-deps``) plus the runtime wheels that
   the contract's entry command needs (:data:`BASE_WHEELS`), pinned to the versions installed on the organiser's
   host so that embeddings inside and outside the sandbox come from the same code;
2. ``mmdebstrap --variant=apt --include=python3-minimal,python3-venv bookworm`` (cached as a tarball), unpacked,
   and the wheelhouse installed offline (``--no-index --no-deps``, Debian's own pip, in a network-less
   bubblewrap) into its system Python (``/usr/local/lib/python3.11/dist-packages``), so a package
   submission's venv (``--system-site-packages``) sees lesionbench without reinstalling it;
3. the directory is the root of bubblewrap sandboxes as it is, and ``podman import`` turns it into the
   image ``localhost/lesionbench-sandbox-base:<digest>`` whose entry point is ``lesionbench serve-contract``.

Everything is cached by a digest of the recipe, the lesionbench sources and the pinned versions: a second
build with the same inputs returns at once (the test suite builds the image once per machine).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.benchmark.paths import cache_root
from lesionbench.sandbox.failures import InfrastructureError

logger = logging.getLogger(__name__)

#: Bumped whenever the steps below change what ends up in the image.
RECIPE_VERSION = "1"
#: The Debian release of the root filesystem (its python3 is 3.11, the version lesionbench is tested on).
SUITE = "bookworm"
#: Debian packages of the root filesystem.
DEBIAN_PACKAGES = ("python3-minimal", "python3-venv")
#: Distributions installed next to lesionbench (pinned to the host's versions): what serving an encoder
#: through the contract needs (reading images, cutting patches - its resampling grid is MONAI's, computed
#: in torch - and writing the embeddings). torch comes with its own requirements; the host's torch build
#: (CPU or CUDA) is the one the image gets.
BASE_WHEELS = ("numpy", "pandas", "python-dateutil", "pytz", "tzdata", "six", "SimpleITK", "tqdm",
               "torch", "filelock", "typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "MarkupSafe", "fsspec")
#: The image's entry point: serve the encoder named by $LESIONBENCH_ENCODER through the contract.
ENTRYPOINT = '["lesionbench", "serve-contract"]'
#: The unprivileged user every sandbox runs as.
SANDBOX_UID = 65534
#: The image name; its tag is the recipe digest.
IMAGE_NAME = "localhost/lesionbench-sandbox-base"


@dataclass(frozen=True)
class BaseImage:
    """A built base: the bubblewrap root filesystem and the OCI image made from it (``image`` is empty
    where no container engine was asked for)."""

    digest: str
    rootfs: Path
    image: str


def sandbox_cache() -> Path:
    """Where root filesystems and wheelhouses are kept: ``$LESIONBENCH_SANDBOX_CACHE``, else
    ``$LESIONBENCH_CACHE/sandbox``."""
    env = os.environ.get("LESIONBENCH_SANDBOX_CACHE")
    return Path(env) if env else cache_root() / "sandbox"


def source_root() -> Path:
    """The lesionbench source tree (the folder with ``pyproject.toml``) that the image's wheel is built from."""
    import lesionbench

    root = Path(lesionbench.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise ConfigurationError(f"The sandbox base image is built from lesionbench's source tree, but {root} has no pyproject.toml; "
                                 "run from a checkout (pip install -e .).")  # fmt: skip
    return root


def pinned_versions() -> dict[str, str]:
    """The host's installed version of every :data:`BASE_WHEELS` distribution."""
    out = {}
    for name in BASE_WHEELS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ConfigurationError(f"{name} is not installed on this host; the sandbox base pins it to the host's version. pip install {name}.") from exc
    return out


def recipe_digest(root: Path | None = None) -> str:
    """A digest of everything that ends up in the image: recipe, packages, pins and lesionbench's sources."""
    root = root or source_root()
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}|{SUITE}|{DEBIAN_PACKAGES}|{ENTRYPOINT}|{SANDBOX_UID}|{sorted(pinned_versions().items())}".encode())
    files = [root / "pyproject.toml", *sorted((root / "lesionbench").rglob("*"))]
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str], what: str, timeout: float = 900) -> None:
    logger.info("%s: %s", what, " ".join(cmd[:6]) + (" ..." if len(cmd) > 6 else ""))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"{what} failed: {exc}. Check that the tool is installed and the machine is not overloaded.") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise InfrastructureError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def build_wheelhouse(dest: Path, root: Path | None = None) -> Path:
    """lesionbench's wheel and the pinned :data:`BASE_WHEELS` (binary wheels only) in ``dest``."""
    root = root or source_root()
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="lesionbench-wheel-") as tmp:
        # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
        src = Path(tmp) / "src"
        shutil.copytree(root / "lesionbench", src / "lesionbench", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(src)], "building the lesionbench wheel")
    pins = [f"{k}=={v}" for k, v in pinned_versions().items()]
    _run([*pip, "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(dest), *pins], "fetching the base wheels")
    return dest


def debian_tarball(cache: Path, *, mirror: str | None = None) -> Path:
    """The Debian part of the root filesystem (``mmdebstrap``), cached as a tarball by suite and packages: it
    changes far less often than lesionbench's sources, and re-downloading it is what takes minutes."""
    if shutil.which("mmdebstrap") is None:
        raise InfrastructureError("mmdebstrap is not installed; apt-get install mmdebstrap (the base image is built from a Debian root filesystem).")
    key = hashlib.sha256(f"{SUITE}|{DEBIAN_PACKAGES}|{mirror}".encode()).hexdigest()[:12]
    tar = cache / f"debian-{SUITE}-{key}.tar"
    if tar.is_file():
        return tar
    partial = tar.with_suffix(".partial.tar")
    cmd = ["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(DEBIAN_PACKAGES)}",
           '--customize-hook=mkdir -p "$1/input" "$1/output" "$1/submission"', SUITE, str(partial)]  # fmt: skip
    if mirror:
        cmd.append(mirror)
    try:
        _run(cmd, "building the Debian root filesystem (mmdebstrap)")
    except InfrastructureError:
        partial.unlink(missing_ok=True)
        raise
    partial.rename(tar)
    return tar


def build_rootfs(dest: Path, wheelhouse: Path, *, cache: Path, mirror: str | None = None) -> Path:
    """A Debian root filesystem in ``dest`` with the wheelhouse installed offline into its system Python
    (``/usr/local/lib/python3.11/dist-packages``), by Debian's own pip inside a network-less bubblewrap."""
    tar = debian_tarball(cache, mirror=mirror)
    if shutil.which("bwrap") is None:
        raise InfrastructureError("bubblewrap is not installed; apt-get install bubblewrap (it installs the wheels into the root filesystem).")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _run(["tar", "-C", str(tmp), "-xf", str(tar)], "unpacking the Debian root filesystem")
        # every wheel as given (the pins are the whole set): no resolution, no index, no network
        install = ('set -e; pip=$(ls /usr/share/python-wheels/pip-*.whl); python3 "$pip/pip" install -q --no-index --no-deps '
                   "--no-cache-dir --break-system-packages /opt/wheels/*.whl")  # fmt: skip
        _run(["bwrap", "--unshare-all", "--die-with-parent", "--bind", str(tmp), "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
              "--ro-bind", str(wheelhouse), "/opt/wheels", "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
              "--setenv", "HOME", "/tmp", "--", "/bin/sh", "-c", install], "installing lesionbench into the root filesystem")  # fmt: skip
        (tmp / "opt" / "wheels").rmdir()
    except (InfrastructureError, OSError):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def podman_import(rootfs: Path, tag: str, engine: list[str]) -> str:
    """``podman import`` the root filesystem as ``tag``, entry point :data:`ENTRYPOINT`, user :data:`SANDBOX_UID`."""
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-cf", "-", "."], stdout=subprocess.PIPE)
    try:
        proc = subprocess.run([*engine, "import", "--change", f"ENTRYPOINT {ENTRYPOINT}", "--change", f"USER {SANDBOX_UID}:{SANDBOX_UID}",
                               "--change", "WORKDIR /tmp", "-", tag], stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if proc.returncode != 0:
        raise InfrastructureError(f"podman import of {rootfs} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return tag


def image_exists(tag: str, engine: list[str]) -> bool:
    """Whether the engine already has ``tag``."""
    return subprocess.run([*engine, "image", "exists", tag], capture_output=True, check=False).returncode == 0


def ensure_base(*, cache: Path | None = None, engine: list[str] | None = None, mirror: str | None = None) -> BaseImage:
    """The base root filesystem (and, with ``engine`` such as ``["podman", ...]``, its image), built once per digest."""
    cache = Path(cache) if cache is not None else sandbox_cache()
    digest = recipe_digest()
    rootfs = cache / f"rootfs-{digest}"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix="wheels-") as wh:
            build_wheelhouse(Path(wh))
            build_rootfs(rootfs, Path(wh), cache=cache, mirror=mirror)
        for old in cache.glob("rootfs-*"):  # earlier digests: superseded
            if old != rootfs and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    tag = ""
    if engine:
        tag = f"{IMAGE_NAME}:{digest}"
        if not image_exists(tag, engine):
            podman_import(rootfs, tag, engine)
    return BaseImage(digest=digest, rootfs=rootfs, image=tag)


def main(argv: list[str] | None = None) -> int:
    """``python -m lesionbench.sandbox.base_image [--no-image]``: build (or find) the base and print it."""
    import argparse

    from lesionbench.sandbox.runner import EngineConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-image", action="store_true", help="only the root filesystem (bubblewrap), no podman image")
    p.add_argument("--mirror", help="Debian mirror for mmdebstrap (default: the host's apt sources)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = ensure_base(engine=None if args.no_image else EngineConfig.podman().command, mirror=args.mirror)
    sys.stdout.write(f"digest {base.digest}\nrootfs {base.rootfs}\nimage {base.image or '-'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
