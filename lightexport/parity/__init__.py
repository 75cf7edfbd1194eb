"""Parity: does an exported artifact compute what the PyTorch reference computes?

Runners (one per backend, one interface), metrics (per-output statistics as data),
tolerances (limits per precision, as data), inputs (real photos, then noise) and a
report that is printed, saved and asserted on. Importing this package imports no
optional backend.
"""

import importlib

#: Public names and the module defining each, imported on first use (PEP 562): the numpy-only parts
#: (metrics, tolerances, reports) then load without PyTorch, as in the emulated arm64 worker.
_WHERE = {
    "check_parity": "check", "make_inputs": "inputs", "OutputStats": "metrics", "compare": "metrics",
    "topk_agreement": "metrics", "ParityReport": "report", "OnnxRuntimeRunner": "runners",
    "OpenVINORunner": "runners", "Runner": "runners", "TorchRunner": "runners", "runner_for": "runners",
    "TOLERANCES": "tolerances", "Tolerance": "tolerances", "tolerance_for": "tolerances",
}


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(f"lightexport.parity.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lightexport.parity' has no attribute {name!r}")


__all__ = [
    "TOLERANCES",
    "OnnxRuntimeRunner",
    "OpenVINORunner",
    "OutputStats",
    "ParityReport",
    "Runner",
    "Tolerance",
    "TorchRunner",
    "check_parity",
    "compare",
    "topk_agreement",
    "make_inputs",
    "runner_for",
    "tolerance_for",
]
