"""ExecuTorch's C++ runtime through ctypes, where its Python runtime cannot load (the emulated arm64 worker).

The library is ``libexecutorch_native.so``, built by :mod:`lightexport.bench.arm64_executorch` over the
aarch64 wheel's own runtime libraries; the set-up puts its path in :data:`LIBRARY_ENV` (or why there is
none in :data:`UNAVAILABLE_ENV`). It runs the same program loader, XNNPACK delegate and kernels as the
Python runtime; only the tensors cross as NumPy buffers instead of torch tensors. Errors come back as
text (every entry point catches C++ exceptions), so a program that fails to load or run is an
exception here, never an abort.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

LIBRARY_ENV = "LIGHTEXPORT_EXECUTORCH_NATIVE"
UNAVAILABLE_ENV = "LIGHTEXPORT_EXECUTORCH_UNAVAILABLE"
_ERROR_BYTES = 512
_MAX_RANK = 8
_loaded: dict[str, ctypes.CDLL] = {}


class NativeError(RuntimeError):
    """A load or run the runtime refused, with its own words."""


def _library(path: str) -> ctypes.CDLL:
    if path not in _loaded:
        lib = ctypes.CDLL(path)
        pointer, text, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        lib.lx_et_threads.argtypes, lib.lx_et_threads.restype = [ctypes.c_int], ctypes.c_int
        lib.lx_et_open.argtypes, lib.lx_et_open.restype = [text, text, size], pointer
        lib.lx_et_run.argtypes = [pointer, pointer, pointer, ctypes.c_int, text, size]
        lib.lx_et_output_shape.argtypes = [pointer, ctypes.c_int, pointer, text, size]
        lib.lx_et_output_copy.argtypes = [pointer, ctypes.c_int, pointer]
        lib.lx_et_close.argtypes, lib.lx_et_close.restype = [pointer], None
        _loaded[path] = lib
    return _loaded[path]


def thread_pool(library: str, wanted: int) -> int:
    """Size ExecuTorch's process-wide pool (before any program loads); the size it has."""
    return int(_library(library).lx_et_threads(int(wanted)))


class NativeProgram:
    """One program's ``forward``, loaded by ExecuTorch's C++ ``Module``; float32 in, float32 out."""

    def __init__(self, library: str, path: Path) -> None:
        self._lib = _library(library)
        self._error = ctypes.create_string_buffer(_ERROR_BYTES)
        self._handle = self._lib.lx_et_open(str(path).encode(), self._error, _ERROR_BYTES)
        if not self._handle:
            raise NativeError(self._error.value.decode(errors="replace") or "the program did not load")

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        shape = np.asarray(x.shape, dtype=np.int64)
        count = self._lib.lx_et_run(self._handle, x.ctypes.data, shape.ctypes.data, x.ndim, self._error, _ERROR_BYTES)
        if count < 0:
            raise NativeError(self._error.value.decode(errors="replace"))
        outputs = []
        for index in range(count):
            dims = np.zeros(_MAX_RANK, dtype=np.int64)
            rank = self._lib.lx_et_output_shape(self._handle, index, dims.ctypes.data, self._error, _ERROR_BYTES)
            if rank < 0:
                raise NativeError(self._error.value.decode(errors="replace"))
            out = np.empty(tuple(int(d) for d in dims[:rank]), dtype=np.float32)
            if self._lib.lx_et_output_copy(self._handle, index, out.ctypes.data) != 0:
                raise NativeError(f"output {index} could not be read")
            outputs.append(out)
        return outputs

    def close(self) -> None:
        if self._handle:
            self._lib.lx_et_close(self._handle)
            self._handle = None
