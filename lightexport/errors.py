"""Errors a user can act on, each mapped to a distinct process exit code.

The CLI catches ``LightExportError`` and prints its message on one line; anything
else is a bug in lightexport and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; scripts and CI branch on these, so they never change meaning."""

    OK = 0
    INTERNAL = 1  # an unexpected exception: a bug in lightexport
    USAGE = 2  # bad option, unknown model name (click uses 2 for its own usage errors too)
    EXPORT = 3  # the export/build itself failed
    PARITY = 4  # the artifact was produced but does not match the reference
    INPUT = 5  # a file we were given is missing, corrupt or does not fit
    OUTPUT = 6  # we cannot write where we were asked to
    BACKEND = 7  # a required backend (TensorRT, CUDA, OpenVINO, ...) is missing


class LightExportError(Exception):
    exit_code: ExitCode = ExitCode.EXPORT


class UsageError(LightExportError):
    exit_code = ExitCode.USAGE


class UnknownModelError(UsageError):
    pass


class InputFileError(LightExportError):
    """A missing, unreadable or corrupt input file (checkpoint, ONNX, image folder)."""

    exit_code = ExitCode.INPUT


class CheckpointError(InputFileError):
    pass


class CalibrationError(InputFileError):
    pass


class OutputError(LightExportError):
    exit_code = ExitCode.OUTPUT


class ExportError(LightExportError):
    exit_code = ExitCode.EXPORT


class ReparamError(ExportError):
    pass


class BackendUnavailableError(LightExportError):
    exit_code = ExitCode.BACKEND


class ParityFailure(LightExportError):
    """Raised by callers that want parity failures as exceptions (the CLI, ``--check``)."""

    exit_code = ExitCode.PARITY


def did_you_mean(value: str, names: Iterable[str]) -> str:
    """``"; did you mean NAME?"`` for the closest of ``names`` to a misspelt ``value``, else ``""``."""
    close = difflib.get_close_matches(str(value), list(names), n=1)
    return f"; did you mean {close[0]}?" if close else ""
