"""OpenVINO behind the runner interface, for IRs (.xml + .bin) and for ONNX files read directly.

On CPUs with bf16 (or fp16) support, OpenVINO executes fp32 models in that lower
precision by default (``INFERENCE_PRECISION_HINT``), so an fp32 IR would fail fp32
parity for reasons that are not the artifact's. The hint is pinned to f32 unless the
caller asks otherwise; quantized (int8) layers run in int8 whatever the hint.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from lightexport.artifacts import check_ir
from lightexport.backends import require
from lightexport.errors import InputFileError
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec, reason
from lightexport.parity.settings import RunSetting
from lightexport.parity.tolerances import coarser
from lightexport.precision import Precision

#: The INFERENCE_PRECISION_HINT that runs an artifact of each precision as exported (int8 layers stay int8).
HINTS = {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "f32"}
#: OpenVINO's element types back to lightexport's precision names.
PRECISION_OF_HINT = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
#: Layer types of the compiled (runtime) model whose precision is the precision the model computes in; the
#: rest are reorders, reshapes and constants.
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")


def default_execution_precision(device: str = "CPU") -> str:
    """The precision OpenVINO runs float layers in when the user sets nothing ("fp32", "bf16" or "fp16").

    On CPUs with AMX or AVX512-BF16 this is bf16 (and f16 on some ARM cores): a deployment
    with default settings runs its float layers in this precision, except layers the IR pins
    (:mod:`lightexport.exporter.openvino_pin`).
    """
    import openvino as ov

    hint = ov.Core().get_property(device, "INFERENCE_PRECISION_HINT")
    return PRECISION_OF_HINT.get(_type_name(hint), "fp32")


def _type_name(element_type) -> str:
    name = str(getattr(element_type, "get_type_name", lambda: element_type)())
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "uint8_t": "u8", "int8_t": "i8"}.get(name, name)


def layer_precisions(compiled) -> dict[str, int]:
    """How many compute layers of a compiled model run in each precision, e.g. ``{"u8": 49, "f32": 3}``.

    Read from the runtime model the plugin built, after it applied the hint and any layers
    the IR pins (see :mod:`lightexport.exporter.openvino_pin`): what really executes.
    """
    counts: Counter[str] = Counter()
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
    except Exception:  # a device without a runtime model: say nothing rather than guess
        return {}
    for op in ops:
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in COMPUTE_LAYERS and op.get_input_size():
            # the activations a layer reads, not its "runtimePrecision", which reports an fp16 IR's f32 convolutions
            # (kernel brgconv_avx512_f32) as f16, after their weights
            counts[_type_name(op.input(0).get_element_type())] += 1
    return dict(counts.most_common())


def run_settings(made: Precision, *, threads: int | None = None, runtime_default: bool = True) -> list[RunSetting]:
    """Pinned to the hint the IR was made for, then (where it differs on this CPU) OpenVINO's own default,
    judged by the limits of the coarser of the two precisions."""
    pinned = HINTS[made.value]
    settings = [RunSetting(f"{pinned} pinned", {"threads": threads, "inference_precision": pinned}, made, tag=pinned)]
    default = default_execution_precision()
    if runtime_default and default != PRECISION_OF_HINT[pinned]:
        settings.append(RunSetting(f"{default}: openvino's default on this CPU",
                                   {"threads": threads, "inference_precision": None}, coarser(made, default),
                                   tag="default", pinned=False))
    return settings


def _port_name(port, fallback: str) -> str:
    return next(iter(sorted(port.get_names())), fallback)


class OpenVINORunner(Runner):
    """One compiled model and infer request; ``threads`` sets ``INFERENCE_NUM_THREADS`` (None: OpenVINO's choice).

    ``inference_precision`` is the ``INFERENCE_PRECISION_HINT`` ("f32", "bf16", "f16"),
    or None to keep the device's default.
    """

    backend = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        device: str = "CPU",
        inference_precision: str | None = "f32",
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads
        self.device = device
        self.inference_precision = inference_precision

    def activate_impl(self) -> None:
        ov = require("openvino", "an OpenVINO artifact")
        if not self.path.is_file():
            raise InputFileError(f"OpenVINO model not found: {self.path}")
        weights = self.path.with_suffix(".bin")
        if self.path.suffix.lower() == ".xml" and not weights.is_file():
            raise InputFileError(f"{weights} is missing: an OpenVINO IR is the .xml plus the .bin beside it")
        if self.path.suffix.lower() == ".xml":
            check_ir(self.path)
        core = ov.Core()
        config: dict[str, object] = {}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.inference_precision:
            config["INFERENCE_PRECISION_HINT"] = self.inference_precision
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a C++ trace for any unreadable file
            raise InputFileError(f"OpenVINO cannot read {self.path}: {reason(exc)}") from exc
        try:
            self.compiled = core.compile_model(model, self.device, config)
        except Exception as exc:
            raise InputFileError(f"OpenVINO cannot compile {self.path} for {self.device}: {reason(exc)}") from exc
        self.input_names = [_port_name(p, f"input_{i}") for i, p in enumerate(self.compiled.inputs)]
        self.output_names = [_port_name(p, f"output_{i}") for i, p in enumerate(self.compiled.outputs)]
        self._dtypes = [p.get_element_type().to_dtype() for p in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()
        executed = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        #: what float layers actually run in, after the plugin resolved the hint ("fp32", "bf16", "fp16")
        self.execution_precision = PRECISION_OF_HINT.get(executed, executed)
        #: compute layers per precision they run in (kept after deactivation, for reports)
        self.layer_precisions = layer_precisions(self.compiled)

    def deactivate_impl(self) -> None:
        del self.request, self.compiled

    def infer_impl(self, feed: Feed) -> Outputs:
        inputs = {i: np.asarray(feed[n], dtype=t) for i, (n, t) in enumerate(zip(self.input_names, self._dtypes))}
        try:
            results = self.request.infer(inputs)
        except Exception as exc:
            shapes = {n: tuple(feed[n].shape) for n in self.input_names}
            raise InputFileError(f"{self.path} cannot run on inputs {shapes}: {reason(exc)}") from exc
        return {n: np.array(results[port]) for n, port in zip(self.output_names, self.compiled.outputs)}


def read_io(xml: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    """An IR's ports: names, element types and partial shapes, read without compiling."""
    ov = require("openvino", "reading an OpenVINO IR")
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        raise InputFileError(f"{xml} is not a readable OpenVINO IR: {reason(exc)}") from exc

    def spec(port, fallback: str) -> TensorSpec:
        name = port.get_any_name() if port.get_names() else fallback
        try:
            dtype = np.dtype(port.get_element_type().to_dtype()).name
        except Exception:  # an element type NumPy cannot name (u1, nf4)
            raise InputFileError(f"{xml}: port {name} has element type {port.get_element_type()}, "
                                 "which has no NumPy type") from None
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSpec(name, dtype, dims)

    return ArtifactIO(tuple(spec(p, f"input_{i}") for i, p in enumerate(model.inputs)),
                      tuple(spec(p, f"output_{i}") for i, p in enumerate(model.outputs)))


def profile_layers(path: Path, threads: int, feed: np.ndarray, runs: int = 20, inference_precision: str | None = "f32"
                   ) -> list[tuple[str, str, float]]:
    """OpenVINO's per-layer counters (PERF_COUNT) over ``runs`` inferences: (layer, type/kernel, mean us)."""
    ov = require("openvino", "OpenVINO's layer profile")
    config = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads}
    if inference_precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    totals: dict[tuple[str, str], float] = {}
    for _ in range(runs):
        request.infer([feed])
        for info in request.get_profiling_info():
            key = (info.node_name, f"{info.node_type} ({info.exec_type})")
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e6
    return sorted(((n, kind, us / runs) for (n, kind), us in totals.items() if us > 0), key=lambda row: -row[2])


def kernel_probe(precision: str, threads: int, workloads) -> dict:
    """The bench's ceiling probe: each workload (``MatMul``, ``Convolution``) compiled for the CPU, ``{workload:
    run() -> seconds}``. Float precisions are the inference hint (empty where this CPU cannot run it: bf16
    without bf16); int8 puts NNCF's pattern (``FakeQuantize`` on activations and weights) before each, which the
    CPU plugin runs as u8 x i8 kernels, as it does an NNCF IR (the activation's quantize is timed with it)."""
    hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}.get(precision)
    if hint is None:
        return {}
    try:
        import openvino as ov
        try:
            import openvino.opset13 as ops
        except ImportError:
            import openvino.runtime.opset13 as ops
    except ImportError:
        return {}
    import time

    int8 = precision == "int8"
    rng = np.random.default_rng(0)

    def quantized(node, low: float, high: float, levels: int):
        if not int8:
            return node
        low_, high_ = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        return ops.fake_quantize(node, low_, high_, low_, high_, levels)

    core, runs = ov.Core(), {}
    for work in workloads:
        if work[0] == "gemm":
            n = work[1]
            shape, weights = [n, n], rng.standard_normal((n, n), dtype=np.float32)
        elif work[0] == "conv":
            _, c, side, k = work
            shape, weights = [1, c, side, side], rng.standard_normal((c, c, k, k), dtype=np.float32)
        else:
            continue
        x = ops.parameter(shape, ov.Type.f32, name="x")
        a = quantized(ops.relu(x) if int8 else x, 0.0, 4.0, 256)
        w = quantized(ops.constant(weights), -3.0, 3.0, 255)
        y = (ops.matmul(a, w, False, False) if work[0] == "gemm" else
             ops.convolution(a, w, [1, 1], [work[3] // 2] * 2, [work[3] // 2] * 2, [1, 1]))
        try:
            compiled = core.compile_model(ov.Model([y], [x], "probe"), "CPU",
                                          {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint})
        except Exception:  # noqa: BLE001  # a hint this CPU cannot run
            return {}
        feed = rng.random(shape, dtype=np.float32)

        def run(compiled=compiled, feed=feed) -> float:
            start = time.perf_counter()
            compiled([feed])
            return time.perf_counter() - start

        runs[work] = run
    return runs
