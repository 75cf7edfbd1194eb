"""ncnn behind the runner interface: the ``.ncnn.param`` + ``.ncnn.bin`` pair, checked before ncnn sees it.

ncnn trusts its files: after a failed ``load_model`` (an empty, truncated or foreign ``.bin``) the
next ``extract`` dies with SIGSEGV; a ``.bin`` of the right size full of junk runs and returns NaN;
a ``.param`` it cannot parse loads as nothing and extracts an empty Mat with no error. So the
pair is checked here first (:func:`check_pair`): the ``.param``'s magic, counts and lines, and the
``.bin``'s size, exactly what the ``.param``'s weighted layers need (fp32 or fp16 storage), and each
weight blob's tag. Inputs are fed as ncnn wants NCHW (``Mat(x, batch_index=0)``: built from a
bare array, a 4-D tensor becomes a 3-D Mat of the wrong axes and runs with 2-10 % errors).

ncnn's defaults (``Net()``) turn fp16 storage, packing and arithmetic on wherever the CPU has them
(on x86 fp16 storage of InnerProduct weights through F16C, compute in fp32; on ARMv8.2 fp16
arithmetic): the pinned setting switches them off, and parity judges both. lightexport's ``.param`` turns
fp16 arithmetic off in its depthwise convolutions (each layer's featmask, see :mod:`lightexport.exporter.ncnn`),
so on ARM the default computes those in fp32 from fp16 storage and the rest in fp16; the label says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lightexport.backends import require
from lightexport.errors import InputFileError
from lightexport.exporter.ncnn_files import check_pair, fp16_arithmetic_off, in_torch_order, read_param
from lightexport.nativeio import captured
from lightexport.parity.runners.base import ArtifactIO, Feed, Outputs, Runner, TensorSpec
from lightexport.parity.settings import RunSetting
from lightexport.parity.tolerances import coarser
from lightexport.precision import Precision

#: Layers that move or hold data and compute nothing (left out of the census of fp16 / fp32 arithmetic).
NOT_COMPUTING = frozenset({"Input", "Split", "MemoryData", "Reshape", "Flatten", "Permute", "Concat", "Slice", "Crop",
                           "Noop"})


def read_metadata(param_path: Path) -> dict[str, str]:
    """The provenance sidecar ``NAME.ncnn.json`` beside the pair (ncnn files hold no metadata)."""
    from lightexport.artifacts import read_sidecar

    return read_sidecar(Path(param_path).with_suffix(".json"))


def _output_shapes(meta: dict[str, str]) -> list[list[int]]:
    try:
        shapes = json.loads(meta.get("lightexport.ncnn_outputs") or meta.get("ncnn_outputs") or "[]")
    except ValueError:
        raise InputFileError("the ncnn sidecar's output shapes are not JSON") from None
    if not isinstance(shapes, list) or not all(isinstance(s, list) and all(isinstance(d, int) and d > 0 for d in s)
                                               for s in shapes):
        raise InputFileError("the ncnn sidecar's output shapes are not lists of positive sizes")
    return shapes


def read_io(param_path: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    meta = metadata or {k.removeprefix("lightexport."): v for k, v in read_metadata(param_path).items()}
    param = read_param(param_path)
    size, batch = meta.get("input_size", ""), meta.get("batch", "1")
    channels = meta.get("channels", "3")
    shape = (int(batch), int(channels), int(size), int(size)) if size.isdigit() and batch.isdigit() else (-1, 3, -1, -1)
    names = json.loads(meta["outputs"]) if meta.get("outputs") else param.outputs
    shapes = _output_shapes({"ncnn_outputs": meta.get("ncnn_outputs", "[]")})
    outputs = tuple(TensorSpec(n, "float32", tuple(s)) for n, s in zip(names, shapes))
    return ArtifactIO((TensorSpec(param.inputs[0] if param.inputs else "in0", "float32", shape),), outputs)


def run_settings(made: Precision, *, threads: int | None = None, runtime_default: bool = True) -> list[RunSetting]:
    """Pinned (fp16 storage, packing and arithmetic off), then ncnn's defaults, judged as fp16 where the CPU has
    fp16 (ARMv8.2 arithmetic, or x86 F16C storage)."""
    settings = [RunSetting("fp32 pinned (ncnn fp16 off)", {"threads": threads, "inference_precision": "fp32"}, made,
                           tag="fp32")]
    if runtime_default:
        what = default_precision()
        if what != "fp32":
            settings.append(RunSetting(f"{what}: ncnn's default on this CPU",
                                       {"threads": threads, "inference_precision": None},
                                       coarser(made, Precision.FP16), tag="default", pinned=False))
    return settings


def default_precision() -> str:
    """What ncnn's default options do to float layers on this CPU: fp16 arithmetic (ARMv8.2), fp16 storage of
    weights (x86 with F16C: InnerProduct's), or fp32."""
    ncnn = _ncnn()
    if ncnn.cpu_support_arm_asimdhp():
        return "fp16 arithmetic"
    if hasattr(ncnn, "cpu_support_x86_f16c") and ncnn.cpu_support_x86_f16c() or ncnn.cpu_support_x86_avx2():
        return "fp16 storage"
    return "fp32"


def _ncnn():
    return require("ncnn", "an ncnn artifact")


class NcnnRunner(Runner):
    """One ``ncnn.Net``; ``inference_precision`` "fp32" pins fp16 off, None keeps ncnn's defaults."""

    backend = "ncnn"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, inference_precision: str | None = "fp32",
                 name: str | None = None) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.threads = threads
        self.inference_precision = inference_precision

    def activate_impl(self) -> None:
        ncnn = _ncnn()
        weights = self.path.with_suffix(".bin")
        param = check_pair(self.path, weights)
        meta = read_metadata(self.path)
        self.shapes = _output_shapes(meta)
        net = ncnn.Net()
        opt = net.opt  # set before loading: ncnn fixes the layer implementations at load time
        opt.use_vulkan_compute = False
        opt.num_threads = self.threads or 1
        if self.inference_precision == "fp32":
            for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage",
                         "use_bf16_packed"):
                setattr(opt, flag, False)
        with captured(1, 2) as said:  # ncnn prints why a load failed ("layer X not exists or registered")
            loaded = net.load_param(str(self.path)) == 0 and net.load_model(str(weights)) == 0
        if not loaded:
            why = f": ncnn says {said.reason()!r}" if said.reason() else ""
            raise InputFileError(f"ncnn cannot load {self.path} + {weights.name}{why}")
        self.net = net
        self.blob_in = (net.input_names() or param.inputs)[0]
        self.blobs_out = in_torch_order(net.output_names() or param.outputs)
        names = json.loads(meta["lightexport.outputs"]) if meta.get("lightexport.outputs") else None
        self.input_names = ["input"]
        self.output_names = names if names and len(names) == len(self.blobs_out) else (
            ["logits"] if len(self.blobs_out) == 1 else list(self.blobs_out))
        self.execution_precision = "fp32" if self.inference_precision == "fp32" else default_precision()
        masked = len(fp16_arithmetic_off(param))
        if masked and self.execution_precision == "fp16 arithmetic":
            self.execution_precision = f"fp16 arithmetic, fp32 arithmetic in {masked} layers (the .param's featmask)"
            computing = sum(1 for layer in param.layers if layer.type not in NOT_COMPUTING)
            self.layer_precisions = {"f16": computing - masked, "f32": masked}  # the census parity's label reads

    def deactivate_impl(self) -> None:
        del self.net

    def infer_impl(self, feed: Feed) -> Outputs:
        ncnn = _ncnn()
        x = np.ascontiguousarray(feed["input"], dtype=np.float32)  # float64 would make an 8-byte Mat
        if x.ndim != 4:
            raise InputFileError(f"{self.path} takes NCHW input, got shape {x.shape}")
        extractor = self.net.create_extractor()
        outputs: Outputs = {}
        try:
            if extractor.input(self.blob_in, ncnn.Mat(x, batch_index=0).clone()) != 0:
                raise InputFileError(f"{self.path} refused an input of shape {x.shape}")
            for i, (blob, name) in enumerate(zip(self.blobs_out, self.output_names)):
                code, mat = extractor.extract(blob)
                if code != 0 or mat.empty():
                    raise InputFileError(f"{self.path} gave no output {blob} for an input of shape {x.shape}")
                value = np.array(mat.numpy(batch_index=0), copy=True)
                outputs[name] = self._shaped(value, i, len(x))
        finally:
            extractor.clear()
        return outputs

    def _shaped(self, value: np.ndarray, index: int, batch: int) -> np.ndarray:
        """ncnn drops size-1 axes (logits come back as (N, 1000) or (1000,)): restore the recorded shape."""
        if index < len(self.shapes):
            shape = [batch, *self.shapes[index][1:]]
            if int(np.prod(shape)) == value.size:
                return value.reshape(shape)
        return value.reshape(batch, -1) if value.size % batch == 0 else value
