"""ONNX Runtime behind the runner interface; also what ``lightexport bench`` times ONNX files with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightexport.errors import BackendUnavailableError, InputFileError, UsageError
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec

GRAPH_OPTIMIZATIONS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _message(exc: BaseException) -> str:
    """ORT's messages are short but span lines (the cause, then the detail): keep all of it on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


class OnnxRuntimeRunner(Runner):
    """One ``InferenceSession`` on ``path``; ``threads`` pins intra-op threads (None: ORT's choice, all cores).

    Feeds are cast to the dtype each input declares, so an ONNX file with fp16 inputs
    can be compared against an fp32 reference without the caller knowing.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        graph_optimization: str = "all",
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise UsageError(f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATIONS)}")
        self.path = Path(path)
        self.threads = threads
        self.providers = list(providers)
        self.graph_optimization = graph_optimization
        self._dtypes: dict[str, type] = {}

    def activate_impl(self) -> None:
        import onnxruntime as ort

        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailableError(f"this ONNX Runtime build lacks {', '.join(missing)} "
                                          f"(available: {', '.join(ort.get_available_providers())})")
        if not self.path.is_file():
            raise InputFileError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        level = GRAPH_OPTIMIZATIONS[self.graph_optimization]
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        options.log_severity_level = 3  # errors only: per-node warnings would drown the report
        # Idle pool threads would otherwise spin after each run and steal the cores from whatever
        # runs next: interleaved with eager PyTorch at 2 threads on 2 cores, eager measured 21.2 ms
        # instead of 7.4 ms alone (8.1 ms without spinning), and ONNX Runtime itself 5.5 -> 4.9 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...) for bad files
            raise InputFileError(f"ONNX Runtime cannot load {self.path}: {_message(exc)}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = {i.name: _NUMPY_TYPES[i.type] for i in self.session.get_inputs() if i.type in _NUMPY_TYPES}

    def deactivate_impl(self) -> None:
        del self.session

    def infer_impl(self, feed: Feed) -> Outputs:
        inputs = {n: np.asarray(feed[n], dtype=self._dtypes.get(n)) for n in self.input_names}
        try:
            values = self.session.run(self.output_names, inputs)
        except Exception as exc:
            shapes = {n: tuple(a.shape) for n, a in inputs.items()}
            raise InputFileError(f"{self.path} cannot run on inputs {shapes}: {_message(exc)}") from exc
        return dict(zip(self.output_names, values))


def read_io(path: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    """An ONNX file's graph inputs (initializers aside) and outputs, read from the graph without running it."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise InputFileError(f"{path} is not a readable ONNX file: {exc}") from exc
    initializers = {i.name for i in graph.initializer}

    def spec(value) -> TensorSpec:
        kind = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in kind.shape.dim)
        try:
            dtype = np.dtype(tensor_dtype_to_np_dtype(kind.elem_type)).name
        except (KeyError, TypeError, ValueError):
            raise InputFileError(f"{path}: tensor {value.name} has ONNX element type {kind.elem_type}, which has no "
                                 "NumPy type") from None
        return TensorSpec(value.name, dtype, dims)

    return ArtifactIO(tuple(spec(v) for v in graph.input if v.name not in initializers),
                      tuple(spec(v) for v in graph.output))


def profile_layers(path: Path, threads: int, feed: np.ndarray, runs: int = 20) -> list[tuple[str, str, float]]:
    """ONNX Runtime's own profiler over ``runs`` inferences: (node, op type, mean microseconds), slowest first."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="lightexport-ortprof-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: feed})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[tuple[str, str], float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            key = (event["name"].removesuffix("_kernel_time"), event.get("args", {}).get("op_name", "?"))
            totals[key] = totals.get(key, 0.0) + float(event.get("dur", 0))
    return sorted(((n, op, us / runs) for (n, op), us in totals.items()), key=lambda row: -row[2])


def kernel_probe(precision: str, threads: int, workloads: Sequence[tuple]) -> dict:
    """The bench's ceiling probe: each workload as one node in MLAS on ``threads`` threads, ``{workload: run()
    -> seconds}``. fp32: ``MatMul`` and ``Conv`` (which ORT runs in its NCHWc kernels, ~10 % above its MatMul on
    an AVX2 EPYC); int8: ``MatMulInteger`` and ``QLinearConv`` (uint8 x int8, what lightexport's int8 runs).
    Empty for a precision ONNX Runtime has no CPU kernels for."""
    if precision not in ("fp32", "int8"):
        return {}
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return {}
    int8 = precision == "int8"
    rng = np.random.default_rng(0)

    def uint8(shape):
        return rng.integers(0, 255, shape, dtype=np.uint8)

    def constants(**arrays):
        return [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]

    runs = {}
    for work in workloads:
        if work[0] == "gemm":
            n = work[1]
            types = (TensorProto.UINT8, TensorProto.INT8) if int8 else (TensorProto.FLOAT, TensorProto.FLOAT)
            inputs = [helper.make_tensor_value_info(x, t, [n, n]) for x, t in zip("ab", types)]
            node = helper.make_node("MatMulInteger" if int8 else "MatMul", ["a", "b"], ["y"])
            inits = []
            feed = ({"a": uint8((n, n)), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)} if int8 else
                    {"a": rng.standard_normal((n, n), dtype=np.float32),
                     "b": rng.standard_normal((n, n), dtype=np.float32)})
        elif work[0] == "conv":
            _, c, side, k = work
            shape = [1, c, side, side]
            inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8 if int8 else TensorProto.FLOAT, shape)]
            if int8:
                inits = constants(w=rng.integers(-127, 127, (c, c, k, k), dtype=np.int8), xs=np.float32(0.02),
                                  xz=np.uint8(128), ws=np.full(c, 0.01, np.float32), wz=np.zeros(c, np.int8),
                                  ys=np.float32(0.5), yz=np.uint8(128))
                node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                                        pads=[k // 2] * 4)
                feed = {"x": uint8(shape)}
            else:
                inits = constants(w=rng.standard_normal((c, c, k, k), dtype=np.float32))
                node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)
                feed = {"x": rng.standard_normal(shape, dtype=np.float32)}
        else:
            continue
        kind = (TensorProto.INT32 if work[0] == "gemm" else TensorProto.UINT8) if int8 else TensorProto.FLOAT
        out = helper.make_tensor_value_info("y", kind, None)
        model = helper.make_model(helper.make_graph([node], "probe", inputs, [out], inits),
                                  opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs[work] = _timed(session, feed)
    return runs


def _timed(session, feed):
    import time

    def run() -> float:
        start = time.perf_counter()
        session.run(None, feed)
        return time.perf_counter() - start

    return run
