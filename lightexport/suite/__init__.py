"""The parity suite: models x backends x precisions x CPU profiles, with a report directory."""

from lightexport.suite.matrix import BACKENDS, PRECISIONS, Cell, build_matrix
from lightexport.suite.report import summary, write_report
from lightexport.suite.run import run_suite

__all__ = ["BACKENDS", "PRECISIONS", "Cell", "build_matrix", "run_suite", "summary", "write_report"]
