"""ExecuTorch programs (``.pte``) behind the runner interface, through ``executorch.runtime``, XNNPACK threads pinned.

In the emulated arm64 worker, which has no PyTorch for the Python runtime to link, the same program
runs through ExecuTorch's own aarch64 C++ runtime instead (:mod:`.executorch_native`).

Every file is read and checked first by :mod:`lightexport.exporter.pte_files` (ExecuTorch's loader
aborts the process on a junk file), and refused when its input's memory layout is not contiguous
NCHW (what lightexport's feeds are: a channels-last program would misread them without an error)
or when it has no XNNPACK delegate (it would run every op as a portable kernel, ~200x slower).

XNNPACK's work runs on ExecuTorch's process-wide thread pool, not PyTorch's: it is sized with
``_unsafe_reset_threadpool`` before the first program loads (it defaults to every core; resizing
it under a loaded XNNPACK program aborted the process, and growing it later is not honoured), so
the first runner of a process fixes it and later ones say what they ran on.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from lightexport.backends import require
from lightexport.errors import BackendUnavailableError, InputFileError
from lightexport.exporter.pte_files import PteFileError, read_pte
from lightexport.nativeio import captured
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec, reason
from lightexport.parity.runners.executorch_native import LIBRARY_ENV, UNAVAILABLE_ENV, NativeProgram, thread_pool

META_METHOD = "lightexport_meta"
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "DOUBLE": "float64", "INT": "int32", "LONG": "int64",
           "BYTE": "uint8", "CHAR": "int8", "BOOL": "bool", "BFLOAT16": "bfloat16"}
_pool: dict[str, int] = {}


def describe(path: Path) -> dict:
    """The checked program (:func:`read_pte`), with the file named in any refusal."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"ExecuTorch program not found: {path}")
    try:
        return read_pte(path)
    except PteFileError as exc:
        raise InputFileError(f"{path} is not a readable ExecuTorch program: {exc}") from None


def read_metadata(path: Path) -> dict[str, str]:
    """The provenance the program carries as its ``lightexport_meta`` constant (read without running anything)."""
    text = describe(path)["constants"].get(META_METHOD)
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        raise InputFileError(f"{path}: its {META_METHOD} constant is not JSON") from None
    if not isinstance(meta, dict):
        raise InputFileError(f"{path}: its {META_METHOD} constant is not a JSON object")
    return {str(k): str(v) for k, v in meta.items()}


def read_io(path: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    forward = describe(path)["methods"].get("forward")
    if forward is None:
        raise InputFileError(f"{path} has no forward method")
    meta = metadata if metadata is not None else {k.removeprefix("lightexport."): v
                                                  for k, v in read_metadata(path).items()}
    names = json.loads(meta["outputs"]) if meta.get("outputs") else [f"out{i}" for i in range(len(forward["outputs"]))]
    tensors = [t for t in forward["outputs"] if isinstance(t, dict)]
    return ArtifactIO(tuple(TensorSpec(f"input{i}" if i else "input", _DTYPES.get(t["dtype"], "float32"),
                                       tuple(t["sizes"])) for i, t in enumerate(forward["inputs"])),
                      tuple(TensorSpec(n, _DTYPES.get(t["dtype"], "float32"), tuple(t["sizes"]))
                            for n, t in zip(names, tensors)))


def _native_stderr_off():
    """ExecuTorch's C++ logs cpuinfo probes and the pool size to fd 2 ("Failed to open midr file ..."): not ours to
    show. Errors still arrive as Python exceptions."""
    return captured(2)


def set_threads(threads: int | None) -> int:
    """Size ExecuTorch's thread pool once per process, before any program loads; the count it has."""
    wanted = threads or os.cpu_count() or 1
    if "size" not in _pool:
        native = os.environ.get(LIBRARY_ENV)
        with _native_stderr_off():
            if native:
                _pool["size"] = thread_pool(native, wanted)
            else:
                from executorch.extension.pybindings import portable_lib

                portable_lib._unsafe_reset_threadpool(int(wanted))
                _pool["size"] = int(portable_lib._threadpool_get_thread_count())
    return _pool["size"]


def _native_library() -> str | None:
    """The C library the emulated arm64 worker runs programs with (see :mod:`.executorch_native`), if it is one."""
    if os.environ.get(UNAVAILABLE_ENV):
        raise BackendUnavailableError(f"ExecuTorch cannot run in this emulated Python: {os.environ[UNAVAILABLE_ENV]}")
    return os.environ.get(LIBRARY_ENV)


class ExecuTorchRunner(Runner):
    """The program's ``forward`` through ``executorch.runtime.Runtime``; ``threads`` sizes XNNPACK's pool."""

    backend = "executorch"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads

    def activate_impl(self) -> None:
        native = _native_library()
        if not native:
            require("executorch", "an ExecuTorch program")
        info = describe(self.path)
        forward = info["methods"].get("forward")
        if forward is None:
            raise InputFileError(f"{self.path} has no forward method")
        first = forward["inputs"][0] if forward["inputs"] and isinstance(forward["inputs"][0], dict) else None
        if first is None:
            raise InputFileError(f"{self.path}: its forward takes no tensor")
        if first["dim_order"] != sorted(first["dim_order"]):
            raise InputFileError(f"{self.path} was exported from a {first['dim_order']} (channels-last) example; it "
                                 "would misread contiguous NCHW inputs: re-export it from a contiguous example")
        if "XnnpackBackend" not in forward["delegates"]:
            raise InputFileError(f"{self.path} has no XNNPACK delegate: every op would run as a portable kernel "
                                 "(~200x slower); lower it with XnnpackPartitioner")
        self.dtype = np.dtype(_DTYPES.get(first["dtype"], "float32"))
        self.threads_used = set_threads(self.threads)
        try:
            with _native_stderr_off():
                self._execute = self._load_native(native) if native else self._load()
        except Exception as exc:  # noqa: BLE001  # the runtime's errors are RuntimeErrors with a hex status
            raise InputFileError(f"ExecuTorch cannot load {self.path}: {reason(exc)}") from exc
        meta = read_metadata(self.path)
        names = json.loads(meta["lightexport.outputs"]) if meta.get("lightexport.outputs") else None
        count = len(forward["outputs"])
        self.input_names = ["input"]
        self.output_names = names if names and len(names) == count else (["logits"] if count == 1 else
                                                                          [f"out{i}" for i in range(count)])
        made = meta.get("lightexport.precision", "fp32")
        self.execution_precision = "int8" if made == "int8" else "fp16" if made == "fp16" else "fp32"

    def _load(self):
        """``forward`` through the Python runtime, which takes and returns torch tensors."""
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "This API is experimental": the runtime API is what ExecuTorch documents
            from executorch.runtime import Runtime

        method = Runtime.get().load_program(self.path).load_method("forward")
        self._close = lambda: None
        return lambda x: [r.detach().float().numpy().copy() for r in method.execute([torch.from_numpy(x)])]

    def _load_native(self, library: str):
        """``forward`` through ExecuTorch's C++ runtime (the emulated arm64 worker, which has no PyTorch)."""
        if self.dtype != np.float32:
            raise InputFileError(f"{self.path} takes {self.dtype} input; the native runner feeds float32")
        program = NativeProgram(library, self.path)
        self._close = program.close
        return program.run

    def deactivate_impl(self) -> None:
        self._close()
        del self._execute

    def infer_impl(self, feed: Feed) -> Outputs:
        x = np.ascontiguousarray(feed["input"], dtype=self.dtype)
        try:
            results = self._execute(x)
        except Exception as exc:  # noqa: BLE001  # a wrong shape or dtype is a RuntimeError with a status code
            raise InputFileError(f"{self.path} cannot run on an input of shape {x.shape}: {reason(exc)}") from exc
        return dict(zip(self.output_names, results))
