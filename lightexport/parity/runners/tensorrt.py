"""TensorRT engines behind the runner interface, with PyTorch CUDA tensors as device buffers.

PyTorch already brings the CUDA runtime, an allocator and streams, so no extra CUDA
binding (pycuda, cuda-python) is needed: every I/O tensor is a torch tensor on the GPU
whose ``data_ptr()`` is handed to TensorRT, and the engine is enqueued on torch's current
stream, which also orders the uploads before it and the downloads after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lightexport.errors import InputFileError, UsageError
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec
from lightexport.precision import Precision

# TensorRT DataType name -> torch dtype name (resolved lazily: torch.cuda is only touched on activation)
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


class TensorRTRunner(Runner):
    """Runs a serialized engine (``.engine``/``.plan``) built for this GPU and TensorRT version."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        super().__init__(name or Path(path).name)
        self.path = Path(path)
        self._dtypes: dict[str, Any] = {}

    def activate_impl(self) -> None:
        import torch

        from lightexport.exporter.tensorrt import load_tensorrt

        tensorrt = load_tensorrt()
        trt = tensorrt.module
        if not self.path.is_file():
            raise InputFileError(f"TensorRT engine not found: {self.path}")
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        try:
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        except Exception:  # a damaged file may raise instead of returning None
            engine = None
        if engine is None:
            raise InputFileError(f"TensorRT {tensorrt.version} cannot load {self.path}: an engine runs only with the "
                                 "TensorRT version and GPU it was built for (or the file is not an engine); rebuild it")
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: getattr(torch, _TORCH_DTYPES[engine.get_tensor_dtype(n).name]) for n in names}
        self._device = torch.device("cuda")

    def deactivate_impl(self) -> None:
        del self._context, self._engine, self._runtime  # the context must go before its engine

    def _shape_error(self, name: str, shape: tuple[int, ...]) -> UsageError:
        declared = tuple(self._engine.get_tensor_shape(name))
        accepted = "x".join("?" if d < 0 else str(d) for d in declared)
        if -1 in declared:
            low, _, high = self._engine.get_tensor_profile_shape(name, 0)
            accepted += f" from {tuple(low)} to {tuple(high)}"
        return UsageError(f"{self.path} takes {name} of shape {accepted}; got {shape}")

    def infer_impl(self, feed: Feed) -> Outputs:
        import torch

        stream = torch.cuda.current_stream()
        inputs = []  # referenced until the stream is synchronized
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feed[name])).to(self._device, self._dtypes[name])
            if not self._context.set_input_shape(name, tuple(tensor.shape)):
                raise self._shape_error(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
            inputs.append(tensor)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            if min(shape, default=0) < 0:
                raise InputFileError(f"{self.path}: output {name} has a data-dependent shape {shape}, which this "
                                     "runner does not support")
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self._device)
            self._context.set_tensor_address(name, outputs[name].data_ptr())
        if not self._context.execute_async_v3(stream.cuda_stream):
            shapes = {n: tuple(t.shape) for n, t in zip(self.input_names, inputs)}
            raise InputFileError(f"TensorRT could not run {self.path} on inputs {shapes}")
        stream.synchronize()
        return {n: (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy() for n, t in outputs.items()}


def read_io(engine: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    """An engine's inputs from its sidecar (an engine cannot be opened without TensorRT): the profile per
    dynamic input, else the recorded fixed input. Outputs are not recorded."""
    import json

    from lightexport.artifacts import read_sidecar_provenance, strip_prefix
    from lightexport.onnxfile import INPUT_NAME

    meta = metadata or strip_prefix(read_sidecar_provenance(engine))
    fp16_io = Precision.parse(meta.get("precision")) is Precision.FP16 and meta.get("io_fp16") == "true"
    dtype = "float16" if fp16_io else "float32"
    try:
        profile = json.loads(meta.get("profile") or "{}")
        if profile:
            inputs = tuple(TensorSpec(name, dtype, tuple(lo if lo == hi else -1 for lo, hi in zip(r["min"], r["max"])))
                           for name, r in profile.items())
            return ArtifactIO(inputs, ())
    except (ValueError, TypeError, KeyError, AttributeError):
        raise InputFileError(f"{engine}: its sidecar's profile is not readable; re-export it with lightexport trt") \
            from None
    size, batch = meta.get("input_size"), meta.get("batch")
    if not size or not size.isdigit() or not batch or not batch.isdigit():
        raise InputFileError(f"{engine}: its sidecar records neither an optimization profile nor a fixed input "
                             "shape; re-export it with lightexport trt")
    return ArtifactIO((TensorSpec(INPUT_NAME, dtype, (int(batch), 3, int(size), int(size))),), ())
