"""Judge an artifact against reference outputs already computed: parity without PyTorch in the process.

``check_parity`` runs the PyTorch reference beside the artifact; a process that cannot import
PyTorch (an emulated aarch64 Python) gets the reference's outputs computed elsewhere, on the same
inputs, and judges with the same statistics (metrics), limits (tolerances) and report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lightexport.errors import UsageError
from lightexport.parity.metrics import compare
from lightexport.parity.report import ParityReport
from lightexport.parity.runners.base import Outputs, Runner
from lightexport.parity.tolerances import Tolerance, tolerance_for


def judge(artifact: Runner, feeds: Sequence[np.ndarray], reference: Sequence[Outputs], precision: str = "fp32",
          tolerance: Tolerance | None = None) -> ParityReport:
    """Run ``artifact`` on ``feeds`` and compare with ``reference[i]``, the reference's outputs for ``feeds[i]``.

    Outputs are matched in order (the reference's names may differ from the artifact's), as ``check_parity`` does.
    """
    if not feeds or len(feeds) != len(reference):
        raise UsageError(f"parity needs one reference result per input ({len(feeds)} inputs, {len(reference)} results)")
    tolerance = tolerance or tolerance_for(precision)
    with artifact:
        if len(artifact.input_names) != 1:
            raise UsageError(f"{artifact.name} has inputs {artifact.input_names}; the suite feeds one")
        runs = [artifact.infer({artifact.input_names[0]: x}) for x in feeds]
    names = list(runs[0])
    stacked_art = [np.concatenate([run[n] for run in runs]) for n in names]
    stacked_ref = [np.concatenate([ref[n] for ref in reference]) for n in reference[0]]
    outputs = [compare(name, ref, art) for name, ref, art in zip(names, stacked_ref, stacked_art)]
    failures = [f for stats in outputs for f in tolerance.check(stats)]
    if len(reference[0]) != len(names):
        failures.insert(0, f"the artifact has {len(names)} output(s) ({', '.join(names)}) but the reference "
                           f"has {len(reference[0])}")
    path = getattr(artifact, "path", None)
    return ParityReport(artifact=str(path or artifact.name), backend=artifact.backend, precision=tolerance.precision,
                        tolerance=tolerance, outputs=outputs, samples=sum(len(x) for x in feeds), failures=failures)
