"""The parity suite: models x backends x precisions x CPU profiles, with a report directory.

Names are imported on first use (PEP 562), so ``python -m lightexport.suite.worker`` loads no more
than the worker needs: in an emulated arm64 profile there is no PyTorch to load.
"""

import importlib

_WHERE = {"BACKENDS": "matrix", "PRECISIONS": "matrix", "Cell": "matrix", "build_matrix": "matrix",
          "run_matrix": "session", "SuiteOutcome": "session",
          "summary": "report", "write_report": "report", "run_suite": "run"}


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(importlib.import_module(f"lightexport.suite.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lightexport.suite' has no attribute {name!r}")


__all__ = ["BACKENDS", "PRECISIONS", "Cell", "SuiteOutcome", "build_matrix", "run_matrix", "run_suite", "summary",
           "write_report"]
