"""Parity: does an exported artifact compute what the PyTorch reference computes?

Runners (one per backend, one interface), metrics (per-output statistics as data),
tolerances (limits per precision, as data), inputs (real photos, then noise) and a
report that is printed, saved and asserted on. Importing this package imports no
optional backend.
"""

from lightexport.parity.check import check_parity
from lightexport.parity.inputs import make_inputs
from lightexport.parity.metrics import OutputStats, compare, topk_agreement
from lightexport.parity.report import ParityReport
from lightexport.parity.runners import OnnxRuntimeRunner, OpenVINORunner, Runner, TorchRunner, runner_for
from lightexport.parity.tolerances import TOLERANCES, Tolerance, tolerance_for

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
