"""The participant side of the contract: serve any registered encoder inside the sandbox.

``lesionbench serve-contract [--encoder NAME]`` (the base image's entry point; the encoder defaults to
``$LESIONBENCH_ENCODER``) reads ``/input/lesions.csv``, extracts every lesion's features with the harness's
own code (:func:`lesionbench.benchmark.encoders.features.extract_features`: the same patches, the same encoder call
as outside the sandbox) and writes ``/output/embeddings`` and ``/output/model.json``
(:mod:`lesionbench.sandbox.contract`). Packaging an encoder that is registered through the
``lesionbench.encoders`` entry point is then a few lines (docs/code_submissions.md).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

from lesionbench.benchmark.errors import ConfigurationError
from lesionbench.sandbox.contract import read_inputs, write_outputs

logger = logging.getLogger(__name__)

#: The environment variable naming the encoder to serve (set by the image or the organiser's runner).
ENCODER_ENV = "LESIONBENCH_ENCODER"


def load_encoder(name: str, **options: Any) -> Any:
    """Build encoder ``name``: from an installed ``lesionbench.encoders`` entry point first (without importing
    the built-in zoo, whose torch a minimal image may not have), else from lesionbench's registry."""
    points = importlib.metadata.entry_points(group="lesionbench.encoders")
    for ep in points:
        if ep.name == name:
            return ep.load()(**options)
    try:
        from lesionbench.benchmark.encoders.plugins import get_encoder

        return get_encoder(name, **options)
    except ImportError as exc:  # the built-in zoo needs torch, which a minimal image leaves out
        raise ConfigurationError(f"Encoder {name!r} is not an installed entry point here (found: {sorted(ep.name for ep in points)}) and the "
                                 f"built-in encoders cannot load ({exc}); install the package that registers it into the image.") from exc


def serve(encoder: str | None = None, *, input_dir: Path = Path("/input"), output_dir: Path = Path("/output"), batch_size: int | None = None) -> int:
    """Encode every lesion of ``input_dir/lesions.csv`` and write the contract's outputs; returns the count."""
    from lesionbench.benchmark.encoders.features import extract_features

    name = encoder or os.environ.get(ENCODER_ENV, "")
    if not name:
        raise ConfigurationError(f"No encoder to serve: pass --encoder NAME or set ${ENCODER_ENV} (the image's ENV line).")
    model = load_encoder(name)
    lesions = read_inputs(Path(input_dir))
    logger.info("serving %s on %d lesions", model.meta.name, len(lesions))
    feats = extract_features(lesions, model, cache=False, progress=False, batch_size=batch_size)
    write_outputs(Path(output_dir), lesions["lesion_id"].astype(str).tolist(), feats, model.meta)
    return len(lesions)
