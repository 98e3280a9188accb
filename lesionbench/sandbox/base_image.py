"""The sandbox base image: a Debian root filesystem with python3, lesionbench and its feature-extraction
dependencies, built locally from ``mmdebstrap`` (no image registry is ever contacted).

The recipe (:data:`RECIPE_VERSION`) is:

1. ``mmdebstrap --variant=apt --include=python3-minimal,python3-venv bookworm`` (cached as a tarball);
2. the dependency layer: that root filesystem with the wheels the contract's entry command needs
   (:data:`BASE_WHEELS`, pinned to the versions installed on the organiser's host, so embeddings inside and
   outside the sandbox come from the same code) installed offline (``--no-index --no-deps``, Debian's own
   pip, in a network-less bubblewrap) into its system Python (``/usr/local/lib/python3.11/dist-packages``),
   so a package submission's venv (``--system-site-packages``) sees them without reinstalling;
   ``podman import`` makes it the image ``localhost/lesionbench-sandbox-base-deps:<deps digest>``;
3. lesionbench's wheel (built from the checkout) on top: a hard-linked copy of the layer for bubblewrap, and
   ``podman build`` of ``localhost/lesionbench-sandbox-base:<digest>`` (entry point ``lesionbench
   serve-contract``, user 65534) for images.

Each layer is cached by its digest (the recipe and pins; plus lesionbench's sources for the top one): the
dependency layer is built once per machine (minutes), a changed checkout rebuilds only the top (seconds).
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
#: through the contract needs (reading images, cutting patches - scipy interpolates, the resampling grid is MONAI's, computed
#: in torch - and writing the embeddings). torch comes with its own requirements; the host's torch build
#: (CPU or CUDA) is the one the image gets.
BASE_WHEELS = ("numpy", "scipy", "pandas", "python-dateutil", "pytz", "tzdata", "six", "SimpleITK", "tqdm",
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
    root = Path(__file__).resolve().parents[2]  # lesionbench/sandbox/base_image.py -> the checkout
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


def deps_digest() -> str:
    """A digest of the dependency layer: Debian release and packages, and the pinned wheels."""
    return hashlib.sha256(f"{RECIPE_VERSION}|{SUITE}|{DEBIAN_PACKAGES}|{sorted(pinned_versions().items())}".encode()).hexdigest()[:16]


def recipe_digest(root: Path | None = None) -> str:
    """A digest of everything that ends up in the image: the dependency layer, the entry point and lesionbench's sources."""
    root = root or source_root()
    h = hashlib.sha256()
    h.update(f"{deps_digest()}|{ENTRYPOINT}|{SANDBOX_UID}".encode())
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


def lesionbench_wheel(dest: Path, root: Path | None = None) -> Path:
    """lesionbench's wheel, built from the source tree into ``dest``."""
    root = root or source_root()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lesionbench-wheel-") as tmp:
        # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
        src = Path(tmp) / "src"
        shutil.copytree(root / "lesionbench", src / "lesionbench", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(src)], "building the lesionbench wheel")
    return next(dest.glob("lesionbench-*.whl"))


def dependency_wheels(dest: Path) -> Path:
    """The pinned :data:`BASE_WHEELS` (binary wheels only) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{k}=={v}" for k, v in pinned_versions().items()]
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(dest), *pins], "fetching the base wheels")
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


def _pip_install(root: Path, wheels: Path) -> None:
    """Install every wheel of ``wheels`` into ``root``'s system Python offline (``--no-index --no-deps``: the pins
    are the whole set), by Debian's own pip in a network-less bubblewrap."""
    if shutil.which("bwrap") is None:
        raise InfrastructureError("bubblewrap is not installed; apt-get install bubblewrap (it installs the wheels into the root filesystem).")
    install = ('set -e; pip=$(ls /usr/share/python-wheels/pip-*.whl); python3 "$pip/pip" install -q --no-index --no-deps '
               "--no-cache-dir --break-system-packages /opt/wheels/*.whl")  # fmt: skip
    (root / "opt" / "wheels").mkdir(parents=True, exist_ok=True)
    try:
        _run(["bwrap", "--unshare-all", "--die-with-parent", "--bind", str(root), "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
              "--ro-bind", str(wheels), "/opt/wheels", "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
              "--setenv", "HOME", "/tmp", "--", "/bin/sh", "-c", install], "installing wheels into the root filesystem")  # fmt: skip
    finally:
        (root / "opt" / "wheels").rmdir()


def _built(dest: Path, make) -> Path:
    """Build a folder through ``dest.partial`` (removed on failure), then move it in place."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        make(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def ensure_deps_rootfs(cache: Path, *, mirror: str | None = None) -> Path:
    """The dependency layer: the Debian root filesystem with the pinned wheels installed (cached by :func:`deps_digest`)."""
    dest = cache / f"deps-{deps_digest()}"
    if (dest / "usr" / "bin" / "python3").exists():
        return dest
    tar = debian_tarball(cache, mirror=mirror)

    def make(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        _run(["tar", "-C", str(tmp), "-xf", str(tar)], "unpacking the Debian root filesystem")
        with tempfile.TemporaryDirectory(dir=cache, prefix="wheels-") as wh:
            _pip_install(tmp, dependency_wheels(Path(wh)))

    return _built(dest, make)


def build_rootfs(dest: Path, deps: Path, wheel: Path) -> Path:
    """The base root filesystem: the dependency layer (hard-linked: nothing in it is rewritten) plus lesionbench."""

    def make(tmp: Path) -> None:
        _run(["cp", "-al", str(deps), str(tmp)], "linking the dependency layer")
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix="wheels-") as wh:
            shutil.copy2(wheel, Path(wh) / wheel.name)
            _pip_install(tmp, Path(wh))

    return _built(dest, make)


def podman_import(rootfs: Path, tag: str, engine: list[str]) -> str:
    """``podman import`` a root filesystem as ``tag``."""
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-cf", "-", "."], stdout=subprocess.PIPE)
    try:
        proc = subprocess.run([*engine, "import", "-q", "-", tag], stdin=tar.stdout, capture_output=True, text=True, timeout=900, check=False)
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if proc.returncode != 0:
        raise InfrastructureError(f"podman import of {rootfs} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return tag


def podman_build_base(deps_tag: str, wheel: Path, tag: str, engine: list[str]) -> str:
    """The base image: the dependency image plus lesionbench's wheel, entry point :data:`ENTRYPOINT`, user :data:`SANDBOX_UID`."""
    with tempfile.TemporaryDirectory(prefix="lesionbench-base-") as ctx:
        shutil.copy2(wheel, Path(ctx) / wheel.name)
        (Path(ctx) / "Containerfile").write_text(
            f"FROM {deps_tag}\nCOPY {wheel.name} /tmp/\n"
            f'RUN pip=$(ls /usr/share/python-wheels/pip-*.whl) && python3 "$pip/pip" install -q --no-index --no-deps --no-cache-dir '
            f"--break-system-packages /tmp/{wheel.name} && rm /tmp/{wheel.name}\n"
            f"ENTRYPOINT {ENTRYPOINT}\nUSER {SANDBOX_UID}:{SANDBOX_UID}\nWORKDIR /tmp\n"
        )
        _run([*engine, "build", "-q", "--layers=false", "--network", "none", "--pull=never", "-t", tag, ctx], "building the base image")
    return tag


def image_exists(tag: str, engine: list[str]) -> bool:
    """Whether the engine already has ``tag``."""
    return subprocess.run([*engine, "image", "exists", tag], capture_output=True, check=False).returncode == 0


def _remove_other_tags(name: str, keep: str, engine: list[str]) -> None:
    """Superseded base images (earlier digests) go, as their root filesystems do."""
    res = subprocess.run([*engine, "images", "--format", "{{.Repository}}:{{.Tag}}", name], capture_output=True, text=True, check=False, timeout=120)
    for ref in res.stdout.split():
        if ref != keep and ref.startswith(f"{name}:"):
            subprocess.run([*engine, "rmi", ref], capture_output=True, check=False, timeout=300)


def ensure_base(*, cache: Path | None = None, engine: list[str] | None = None, mirror: str | None = None) -> BaseImage:
    """The base root filesystem (and, with ``engine`` such as ``["podman", ...]``, its image), built once per digest.

    Two layers: the dependencies (Debian + pinned wheels; rebuilt only when a pin or the recipe changes) and
    lesionbench on top (rebuilt in seconds whenever its sources change)."""
    cache = Path(cache) if cache is not None else sandbox_cache()
    cache.mkdir(parents=True, exist_ok=True)
    digest = recipe_digest()
    rootfs = cache / f"rootfs-{digest}"
    tag = f"{IMAGE_NAME}:{digest}" if engine else ""
    need_rootfs = not (rootfs / "usr" / "bin" / "python3").exists()
    need_image = bool(engine) and not image_exists(tag, engine)  # type: ignore[arg-type]
    if need_rootfs or need_image:
        deps = ensure_deps_rootfs(cache, mirror=mirror)
        with tempfile.TemporaryDirectory(dir=cache, prefix="wheel-") as wh:
            wheel = lesionbench_wheel(Path(wh))
            if need_rootfs:
                build_rootfs(rootfs, deps, wheel)
                for old in cache.glob("rootfs-*"):  # earlier digests: superseded
                    if old != rootfs and old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
            if need_image:
                deps_tag = f"{IMAGE_NAME}-deps:{deps_digest()}"
                if not image_exists(deps_tag, engine):  # type: ignore[arg-type]
                    podman_import(deps, deps_tag, engine)  # type: ignore[arg-type]
                podman_build_base(deps_tag, wheel, tag, engine)  # type: ignore[arg-type]
                _remove_other_tags(IMAGE_NAME, tag, engine)  # type: ignore[arg-type]
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
