"""A fake format for tests/test_backends.py: one record here, plus its exporter and runner modules beside it.

TorchScript (``torch.jit.trace`` of the fused module, run by ``torch.jit.load``), registered under
its own name, so the proof that "a format is a record plus two modules" uses a real runtime and
real numbers. ``LIGHTEXPORT_FORMATS=tests.fakeformat`` registers it in every process lightexport
starts (the suite's profile workers too).
"""

import warnings

from lightexport.backends import Backend, Precision, register

warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)  # its deprecation notices

RECORD = register(Backend(
    name="fake-ts", runtime="fake-jit", label="TorchScript (test format)", color="#8c564b", suffixes=(".ts",),
    precisions=(Precision.FP32,), description="TorchScript, a fake format proving the record is enough",
    exporter="tests.fakeformat.exporter:export", runner="tests.fakeformat.runner:TorchScriptRunner",
    metadata="tests.fakeformat.runner:read_metadata", io="tests.fakeformat.runner:read_io",
    naive="tests.fakeformat.exporter:naive_export", naive_label="naive torch.jit.trace",
    module="torch", install_hint="pip install torch",
))
