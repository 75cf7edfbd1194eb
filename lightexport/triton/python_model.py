"""``model.py`` for Triton's Python backend: ONNX Runtime or OpenVINO inside the server.

This file is copied verbatim into ``REPO/NAME/1/model.py`` by ``lightexport triton
--backend python-ort|python-openvino``; it runs inside Triton's Python backend stub, not
in lightexport (it imports nothing from it). Which runtime and artifact to load come from
the ``parameters`` of ``config.pbtxt`` (``runtime``, ``artifact``).

Tensors cross the stub boundary through DLPack, not ``as_numpy()``/``Tensor(name, array)``:
the stub shipped with PyTriton 0.7.0 is built with a pybind11 that predates NumPy 2 and
reads a NumPy 2 array's dtype size as 0 (inputs arrive with every element equal to the
first, outputs arrive empty). DLPack carries pointer, dtype and shape by value and works
with NumPy 1 and 2 alike.

With dynamic batching Triton hands ``execute`` several requests at once; they are
concatenated along the batch axis, run once, and split back, so a merged batch is one
inference rather than a loop.
"""

import ctypes
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub renames a consumed DLPack capsule "used_dlpack" instead of the standard "used_dltensor",
# so NumPy's capsule destructor would report an unraisable error for every output; rename it ourselves.
_USED = ctypes.c_char_p(b"used_dltensor")
_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_name.restype = ctypes.c_int


def _to_triton(name, array):
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_name(capsule, _USED)
    return tensor


class _OnnxRuntime:
    def __init__(self, path, threads, params):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feed):
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))


class _OpenVINO:
    def __init__(self, path, threads, params):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads}
        if params.get("inference_precision"):  # pinned by lightexport: the CPU plugin may default to bf16
            config["INFERENCE_PRECISION_HINT"] = params["inference_precision"]
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.outputs = [p.get_any_name() for p in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()

    def __call__(self, feed):
        results = self.request.infer([feed[n] for n in self.inputs])
        return {n: np.array(results[p]) for n, p in zip(self.outputs, self.compiled.outputs)}


RUNTIMES = {"onnxruntime": _OnnxRuntime, "openvino": _OpenVINO}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        runtime = params.get("runtime", "onnxruntime")
        if runtime not in RUNTIMES:
            raise pb_utils.TritonModelException(f"unknown runtime {runtime!r}; expected one of {sorted(RUNTIMES)}")
        path = os.path.join(args["model_repository"], args["model_version"], params["artifact"])
        instances = sum(g.get("count", 1) for g in config.get("instance_group", [])) or 1
        threads = max(1, (os.cpu_count() or 1) // instances)  # instances share the cores instead of oversubscribing
        self.runtime = RUNTIMES[runtime](path, threads, params)
        self.batched = config.get("max_batch_size", 0) > 0

    def execute(self, requests):
        feeds = [{n: np.from_dlpack(pb_utils.get_input_tensor_by_name(r, n)) for n in self.runtime.inputs}
                 for r in requests]
        first = self.runtime.inputs[0]
        shapes = {f[first].shape[1:] for f in feeds}
        if self.batched and len(feeds) > 1 and len(shapes) == 1:
            sizes = [len(f[first]) for f in feeds]
            merged = self.runtime({n: np.concatenate([f[n] for f in feeds]) for n in self.runtime.inputs})
            bounds = np.cumsum([0, *sizes])
            results = [{n: v[a:b] for n, v in merged.items()} for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            results = [self.runtime(f) for f in feeds]
        return [pb_utils.InferenceResponse([_to_triton(n, v) for n, v in result.items()]) for result in results]

    def finalize(self):
        self.runtime = None
