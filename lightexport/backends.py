"""The table of formats: one record per artifact format, read by every layer.

Everything lightexport knows about a format lives in its :class:`Backend` record: its name
and runtime, the files an artifact is made of, the precisions it makes, its exporter and
the options that exporter takes (with their CLI spelling, type, range and help), the runner
that executes it, how its provenance and its tensors are read back, the runtime settings it
is judged in, its naive baseline, its label and colour in plots, what the emulated arm64
Python needs to run it, and how to install it. The API, the CLI (``lightexport export
--format``), parity, the suite, bench and Triton all read the record, so adding a format is
adding a record here plus its own exporter and runner modules (``tests/test_backends.py``
drives a fake one through every command).

Callables are named as ``"module:attribute"`` strings and imported on first use, so a
machine without OpenVINO or TensorRT can still list formats and export ONNX.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightexport.errors import BackendUnavailableError, UsageError, did_you_mean
from lightexport.precision import Precision

#: Leading convolutions int8 keeps float when nothing is asked (a record's ``int8_keep_default`` may say otherwise).
DEFAULT_KEEP = 3

F32, F16, BF16, I8 = Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8


def resolve(ref: str) -> Any:
    """The attribute a ``"module:attribute"`` reference names (imported now)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Option:
    """One option a format's exporter takes beyond the common ones, as the API and the CLI both spell it.

    ``kind`` is ``int``, ``float``, ``str``, ``path``, ``flag`` or ``choice``; ``low``/``high``
    bound numbers (inclusive). ``flag`` is the CLI spelling (None: Python API only);
    ``inverted`` flags set the option to False (``--no-simplify`` is ``simplify_graph=False``).
    """

    name: str
    kind: str
    help: str
    default: Any = None
    flag: str | None = ""
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    inverted: bool = False
    metavar: str | None = None
    #: the one precision the option means something in (``int8_symmetric``: int8); set in another, a usage error
    needs: Precision | None = None

    @property
    def cli_flag(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    def validate(self, value: Any, what: str) -> Any:
        """``value`` checked against this option's kind and range; a usage error naming the option otherwise."""
        label = self.cli_flag or self.name
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise UsageError(f"{what} option {label} is a flag (True/False), got {value!r}")
            return value
        if self.kind in ("int", "float"):
            number = (int,) if self.kind == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, number):
                raise UsageError(f"{what} option {label} must be a{'n integer' if self.kind == 'int' else ' number'}, "
                                 f"got {value!r}")
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise UsageError(f"{what} option {label} must be from {self.low:g} to {self.high:g}, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                close = difflib.get_close_matches(str(value), self.choices, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise UsageError(f"{what} option {label} must be one of {', '.join(self.choices)}, got {value!r}{hint}")
            return value
        if self.kind in ("str", "path"):
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                noun = "path" if self.kind == "path" else "text"
                raise UsageError(f"{what} option {label} takes a non-empty {noun}, got {value!r}")
            return Path(value) if self.kind == "path" else str(value)
        return value  # "object": an API-only value the exporter checks itself


@dataclass(frozen=True)
class Backend:
    """One artifact format and the runtime that executes it."""

    name: str  #: the format as ``api.export`` and ``--format`` name it ("onnx", "openvino", "tensorrt")
    runtime: str  #: the runtime that runs it, as reports name it ("onnxruntime", ...)
    label: str  #: the runtime as a person reads it ("ONNX Runtime")
    color: str  #: its colour in the suite's plots
    suffixes: tuple[str, ...]  #: file suffixes, the first being the default
    precisions: tuple[Precision, ...]  #: precisions the exporter makes
    exporter: str  #: "module:function" taking (source, ExportOptions) -> ExportResult
    runner: str  #: "module:Class" taking (path, **runner options)
    metadata: str  #: "module:function" reading the raw (prefixed) provenance of a file
    io: str  #: "module:function" reading an artifact's tensors (ArtifactIO) for Triton, bench and parity
    module: str  #: the Python module the runtime needs (checked by :func:`require`)
    install_hint: str
    description: str = ""  #: one line for ``lightexport export --help``
    options: tuple[Option, ...] = ()  #: options the exporter takes beyond the common ones
    #: what --fp16/--bf16/--int8 mean for this format (the CLI's help for each precision it makes)
    precision_help: dict[Precision, str] = field(default_factory=dict)
    #: precisions the format does not make, each with the reason a user is told
    not_offered: dict[Precision, str] = field(default_factory=dict)
    runner_options: tuple[str, ...] = ("threads",)  #: which of threads / inference_precision the runner takes
    #: files beside the artifact that belong to it: ".bin" replaces the suffix, "+.json" is appended
    companions: tuple[str, ...] = ()
    #: "module:function" (made, threads, runtime_default) -> the RunSettings parity judges in; None: one setting
    settings: str | None = None
    #: "module:function" (loaded, example, path) -> Path: the artifact a user gets without lightexport
    naive: str | None = None
    naive_label: str = ""
    accepts_onnx: bool = False  #: whether an ONNX file is a valid source besides a PyTorch model
    #: runs on this machine's CPU (bench and the CPU suite time it; a model name in ``bench`` exports to it)
    cpu: bool = True
    #: whether its kernels honour the capped-ISA profiles' variables (ONNX Runtime's MLAS has no cap)
    isa_cap: bool = True
    #: whether its x86 int8 kernels add uint8 x int8 pairs in saturating int16 where the CPU has no VNNI
    #: (lightexport.cpu): its int8 exports then write 7-bit weights, and parity names the CPU when 8-bit ones fail
    int16_pairs: bool = False
    #: what ``--int8-keep`` is when not given: a count of leading convolutions kept float, or "auto"
    int8_keep_default: int | str = DEFAULT_KEEP
    #: the calibration logit cosine ``--int8-keep auto`` must reach; None: ``options.AUTO_TARGET``
    int8_auto_target: float | None = None
    #: the searching ``--int8-keep`` words its exporter runs (``options.SEARCHES``); others are refused
    int8_searches: tuple[str, ...] = ()
    #: aarch64 wheels the emulated arm64 worker needs to run it; () means it does not run there
    aarch64_wheels: tuple[str, ...] = ()
    #: "module:function" (cache dir, on_step) -> env: native pieces the emulated worker needs beyond wheels (built once
    #: and cached), as environment variables its runner reads; a failure is reported there, not raised
    aarch64_setup: str | None = None
    #: Triton serving: (--backend name, config backend/platform, file name in the version folder)
    triton: tuple[tuple[str, str, str], ...] = ()
    #: the format's own modules besides those named above (its converters' helpers), "lightexport.exporter.x"
    helpers: tuple[str, ...] = ()
    #: "module:function" (path, threads, feed, runs) -> [(layer, kind, mean us)], the runtime's own profiler
    layers: str | None = None
    #: "module:function" (precision, threads, workloads) -> {workload: run() -> seconds} in the runtime's own
    #: kernels (workloads: ("gemm", n) for n x n x n, ("conv", channels, side, kernel)), {} or None where it has
    #: none in that precision: the bench's ceilings take the best library and kernel present
    ceiling: str | None = None
    #: a command of its own (``lightexport onnx``): its name, and the examples its --help shows; None: ``export`` only
    command: str | None = None
    examples: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def files(self, artifact: str | Path) -> list[Path]:
        """Every file the artifact ``artifact`` is made of, itself first (an IR's .xml then its .bin)."""
        artifact = Path(artifact)
        found = [artifact]
        for companion in self.companions:
            if companion.startswith("+"):
                found.append(artifact.with_name(artifact.name + companion[1:]))
            else:
                found.append(artifact.with_suffix(companion))
        return found

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def export_function(self):
        return resolve(self.exporter)

    def make_runner(self, path: str | Path, **options: Any):
        """The runner for ``path``; options this runtime has no use for (threads on a GPU) are dropped."""
        kept = {k: v for k, v in options.items() if k in self.runner_options}
        unknown = sorted(set(options) - {"threads", "inference_precision", "name"})
        if unknown:
            raise UsageError(f"unknown runner option(s) {', '.join(unknown)}")
        if options.get("name"):
            kept["name"] = options["name"]
        return resolve(self.runner)(path, **kept)

    def read_metadata(self, path: Path) -> dict[str, str]:
        return resolve(self.metadata)(path)

    def read_io(self, path: Path, metadata: dict[str, str] | None = None):
        return resolve(self.io)(Path(path), metadata or {})

    def available(self) -> bool:
        """Whether the runtime's module can be imported here (without importing it)."""
        import importlib.util

        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False


_ONNX_FP16 = "fp16 compute, explicit casts, sensitive ops fp32."

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            name="onnx", runtime="onnxruntime", label="ONNX Runtime", color="#1f77b4", suffixes=(".onnx",),
            precisions=(F32, F16, I8), description="ONNX (checked, simplified, provenance in the metadata); "
                                                   "run by ONNX Runtime",
            exporter="lightexport.exporter.onnx:export",
            options=(
                Option("opset", "int", "ONNX opset.", default=17, low=9, high=20),
                Option("simplify_graph", "flag", "Skip onnxsim.", default=True, flag="--no-simplify", inverted=True),
                Option("exporter", "choice", "torch's exporter.", default="torchscript",
                       choices=("torchscript", "dynamo")),
                Option("int8_symmetric", "flag", "int8 with symmetric activations (what TensorRT needs; ONNX "
                                                 "Runtime runs uint8 faster).", default=False, needs=I8),
            ),
            precision_help={F16: _ONNX_FP16, I8: "Static int8 QDQ with ONNX Runtime (needs --calib)."},
            runner="lightexport.parity.runners.onnxruntime:OnnxRuntimeRunner",
            metadata="lightexport.artifacts:read_onnx_provenance",
            io="lightexport.parity.runners.onnxruntime:read_io",
            layers="lightexport.parity.runners.onnxruntime:profile_layers",
            ceiling="lightexport.parity.runners.onnxruntime:kernel_probe",
            naive="lightexport.exporter.onnx:naive_export", naive_label="naive torch.onnx.export",
            module="onnxruntime", install_hint="pip install onnxruntime", isa_cap=False, int16_pairs=True,
            int8_keep_default="lean", int8_searches=("auto", "lean"),
            aarch64_wheels=("onnxruntime",),
            triton=(("onnxruntime", "backend:onnxruntime", "model.onnx"),
                    ("python-ort", "python:onnxruntime", "model.onnx")),
            helpers=("lightexport.exporter.onnx_int8", "lightexport.exporter.onnx_fp16",
                     "lightexport.exporter.onnx_bias", "lightexport.exporter.onnx_guard",
                     "lightexport.exporter.onnx_cleanup", "lightexport.onnxfile", "lightexport.parity.bisect",
                     "lightexport.parity.trace"),
            command="onnx", examples=(
                "lightexport onnx fasternet_s --fuse",
                "lightexport onnx fasternet_t0 --weights fasternet_t0.pth --fuse --check -o t0.onnx",
                "lightexport onnx fasternet_t0 --features --dynamic",
                "lightexport onnx fasternet_t0 --fuse --int8 --calib photos/ --calib-size 200"),
        ),
        Backend(
            name="openvino", runtime="openvino", label="OpenVINO", color="#9467bd", suffixes=(".xml",),
            precisions=(F32, F16, BF16, I8), description="OpenVINO IR (.xml + .bin), from PyTorch or an ONNX file",
            exporter="lightexport.exporter.openvino:export",
            options=(
                Option("preprocess", "object", "int8 calibration preprocessing for an ONNX that records none.",
                       flag=None),
                Option("progress", "flag", "NNCF's progress bars.", default=True, flag=None),
            ),
            precision_help={F16: "Compress weights to fp16.",
                            BF16: "Run float layers in bf16 (OpenVINO's default on CPUs with AMX/AVX512-BF16); "
                                  "fp32 weights.",
                            I8: "Post-training int8 with NNCF (needs --calib)."},
            runner="lightexport.parity.runners.openvino:OpenVINORunner",
            runner_options=("threads", "inference_precision"),
            metadata="lightexport.artifacts:read_ir_provenance",
            io="lightexport.parity.runners.openvino:read_io",
            layers="lightexport.parity.runners.openvino:profile_layers",
            ceiling="lightexport.parity.runners.openvino:kernel_probe",
            settings="lightexport.parity.runners.openvino:run_settings",
            naive="lightexport.exporter.openvino:naive_export", naive_label="naive ov.convert_model",
            companions=(".bin",), module="openvino", install_hint="pip install 'lightexport[openvino]'",
            accepts_onnx=True, aarch64_wheels=("openvino",), int16_pairs=True,
            int8_keep_default="lean", int8_searches=("auto", "lean"),
            triton=(("openvino", "backend:openvino", "model.xml"),
                    ("python-openvino", "python:openvino", "model.xml")),
            helpers=("lightexport.exporter.openvino_pin",),
            command="openvino", examples=(
                "lightexport openvino fasternet_s --fuse --check",
                "lightexport openvino fasternet_t0.onnx --fp16 -o t0_fp16.xml",
                "lightexport openvino fasternet_t0 --fuse --int8 --calib photos/ --calib-size 200"),
        ),
        Backend(
            name="tensorrt", runtime="tensorrt", label="TensorRT", color="#2ca02c", suffixes=(".engine", ".plan"),
            precisions=(F32, F16, I8), description="TensorRT engine (NVIDIA GPU); the preflight runs anywhere",
            exporter="lightexport.exporter.tensorrt:export",
            options=(
                Option("opset", "int", "ONNX opset of the ONNX TensorRT parses.", default=17, low=9, high=20),
                Option("min_shape", "str", "Profile minimum, trtexec syntax: input:1x3x160x160.", flag="--min-shape"),
                Option("opt_shape", "str", "Profile optimum, trtexec syntax: input:4x3x224x224.", flag="--opt-shape"),
                Option("max_shape", "str", "Profile maximum, trtexec syntax: input:16x3x320x320.", flag="--max-shape"),
                Option("workspace_gib", "float", "Builder workspace in GiB.", default=4.0, low=0.01, high=1024,
                       flag="--workspace"),
                Option("timing_cache", "path", "Persistent timing cache file (read + updated)."),
                Option("dry_run", "flag", "Preflight only (no TensorRT needed): blockers and the trtexec line.",
                       default=False),
                Option("write_onnx", "flag", "With --dry-run: write the ONNX trtexec builds from as "
                                             "ENGINE.trtexec.onnx (never over a file).", default=False),
            ),
            precision_help={F16: "fp16 engine.", I8: "int8 engine from a QDQ ONNX (needs --calib)."},
            runner="lightexport.parity.runners.tensorrt:TensorRTRunner", runner_options=(),
            metadata="lightexport.artifacts:read_sidecar_provenance",
            io="lightexport.parity.runners.tensorrt:read_io",
            companions=("+.json",), module="tensorrt",
            install_hint="pip install tensorrt (on a machine with an NVIDIA GPU)", accepts_onnx=True, cpu=False,
            int8_searches=("auto", "lean"),  # its QDQ ONNX is searched in ONNX Runtime, as the onnx format's
            triton=(("tensorrt", "platform:tensorrt_plan", "model.plan"),),
            helpers=("lightexport.exporter.trt_preflight",),
            command="trt", examples=(
                "lightexport trt fasternet_t0 --fuse --fp16 --check",
                "lightexport trt model.onnx --fp16 --timing-cache trt.cache",
                "lightexport trt fasternet_s --fuse --dynamic --min-shape input:1x3x224x224 "
                "--opt-shape input:8x3x224x224 --max-shape input:32x3x224x224 --dry-run"),
        ),
        Backend(
            name="ncnn", runtime="ncnn", label="ncnn", color="#e377c2", suffixes=(".ncnn.param",),
            precisions=(F32, F16), description="ncnn (.ncnn.param + .ncnn.bin) through pnnx, fp32 weights unless "
                                               "--fp16; int8 is not offered (no registry tool makes it)",
            exporter="lightexport.exporter.ncnn:export",
            precision_help={F16: "fp16 weights (pnnx's own default; fp32 here unless asked)."},
            not_offered={I8: "ncnn int8 is not offered: no tool on the package registry makes it (the ncnn wheel "
                             "lacks ncnn2table/ncnn2int8, pnnx has no int8 export), and an int8 writer of our own kept "
                             "72.5 % of trained MobileNetV2's decisions and ran no faster than fp32; use --fp16, or "
                             "MNN or ExecuTorch for int8"},
            runner="lightexport.parity.runners.ncnn:NcnnRunner", runner_options=("threads", "inference_precision"),
            metadata="lightexport.parity.runners.ncnn:read_metadata", io="lightexport.parity.runners.ncnn:read_io",
            settings="lightexport.parity.runners.ncnn:run_settings",
            naive="lightexport.exporter.ncnn:naive_export", naive_label="naive pnnx.export",
            companions=(".bin", ".json"), module="ncnn", install_hint="pip install 'lightexport[ncnn]'",
            aarch64_wheels=("ncnn",), helpers=("lightexport.exporter.ncnn_files",),
        ),
        Backend(
            name="mnn", runtime="mnn", label="MNN", color="#bcbd22", suffixes=(".mnn",),
            precisions=(F32, F16, I8), description="MNN (.mnn) through MNN's converter, from lightexport's fused ONNX",
            exporter="lightexport.exporter.mnn:export",
            options=(Option("weight_only", "flag", "With --int8: int8 weights only (--weightQuantBits 8 --hqq), fp32 "
                                               "compute: 3.7x smaller, decisions kept, no faster.", default=False,
                            needs=I8),
                     Option("fast_gelu", "flag", "MNN's tanh GELU kernel instead of lightexport's exact one: "
                                             "FasterNet-T0 1.28x faster in MNN, 1.04e-4 of range off (fails fp32 "
                                             "parity).",
                            default=False),),
            precision_help={F16: "fp16 weights (MNN --fp16).",
                            I8: "int8 by MNN's converter with lightexport's ranges from --calib images "
                                "(per-tensor activations, per-channel weights, --int8-keep leading convolutions "
                                "and the classifier float)."},
            runner="lightexport.parity.runners.mnn:MnnRunner", runner_options=("threads", "inference_precision"),
            metadata="lightexport.parity.runners.mnn:read_metadata", io="lightexport.parity.runners.mnn:read_io",
            settings="lightexport.parity.runners.mnn:run_settings",
            naive="lightexport.exporter.mnn:naive_export", naive_label="naive mnnconvert",
            companions=("+.json",), module="MNN", install_hint="pip install 'lightexport[mnn]'", accepts_onnx=True,
            aarch64_wheels=("MNN",),
            # 5, not 3: trained MobileNetV2 at 240 crops 91.2 -> 96.7 % of decisions, EfficientNet-Lite0 95.0 -> 94.6 %
            # (one crop), and no slower on x86 (MNN's int8 kernels there are slower than its fp32 ones).
            int8_keep_default=5,
        ),
        Backend(
            name="executorch", runtime="executorch", label="ExecuTorch (XNNPACK)", color="#ff7f0e",
            suffixes=(".pte",), precisions=(F32, F16, I8),
            description="ExecuTorch program (.pte) lowered to XNNPACK, from torch.export of the fused module",
            exporter="lightexport.exporter.executorch:export",
            precision_help={F16: "fp16 XNNPACK kernels inside, fp32 input and output.",
                            I8: "int8 with PT2E and XNNPACK's quantizer, calibrated on --calib images."},
            runner="lightexport.parity.runners.executorch:ExecuTorchRunner",
            metadata="lightexport.parity.runners.executorch:read_metadata",
            io="lightexport.parity.runners.executorch:read_io",
            naive="lightexport.exporter.executorch:naive_export", naive_label="naive ExecuTorch lowering",
            module="executorch", install_hint="pip install 'lightexport[executorch]'",
            isa_cap=False,  # XNNPACK picks kernels from CPUID; no environment variable caps it
            aarch64_setup="lightexport.bench.arm64_executorch:setup",  # its Python runtime needs PyTorch: see there
            # PT2E with the default 3 leading convs float failed int8 parity on trained MobileNetV2 (cosine 0.973);
            # auto (regions at both ends, searched on calibration images) keeps 97.5 % of its decisions
            int8_keep_default="auto",
            # at 0.9975 auto kept 16 convs float on trained MobileNetV2 and 92.1 % of decisions; at 0.998, 24 and 97.5 %
            int8_auto_target=0.998, int8_searches=("auto",),
            helpers=("lightexport.exporter.pte_files",),
        ),
        Backend(
            name="tflite", runtime="litert", label="LiteRT (XNNPACK)", color="#17becf", suffixes=(".tflite",),
            precisions=(F32, F16, I8),
            description="LiteRT / TensorFlow Lite (.tflite) through litert-torch, from torch.export of the fused "
                        "module; NCHW float32 input",
            exporter="lightexport.exporter.tflite:export",
            precision_help={F16: "fp16 weights (ai-edge-quantizer float casting); XNNPACK computes fp32.",
                            I8: "int8 weights and activations (ai-edge-quantizer static recipe) calibrated on "
                                "--calib images; float32 input and output; --int8-keep N or auto keeps whole "
                                "regions at the ends float."},
            runner="lightexport.parity.runners.litert:LiteRTRunner",
            metadata="lightexport.parity.runners.litert:read_metadata",
            io="lightexport.parity.runners.litert:read_io",
            naive="lightexport.exporter.tflite:naive_export", naive_label="naive litert_torch.convert",
            companions=("+.json",), module="ai_edge_litert", install_hint="pip install 'lightexport[litert]'",
            isa_cap=False,  # XNNPACK picks kernels from CPUID; no environment variable caps it
            aarch64_wheels=("ai-edge-litert",),  # manylinux_2_27: the runtime alone, no JAX
            int8_searches=("auto",),
            helpers=("lightexport.exporter.tflite_files",),
        ),
    )
}
#: Runtimes by their report names, for the suite and bench ("onnxruntime" -> the onnx record).
RUNTIMES: dict[str, Backend] = {b.runtime: b for b in BACKENDS.values()}
#: The interchange format: what converters of other formats may start from (TensorRT's parser, MNN's converter),
#: and the one format that bisection replays node by node.
INTERCHANGE = "onnx"


def is_interchange(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (the interchange format), by its suffix."""
    return Path(path).name.lower().endswith(BACKENDS[INTERCHANGE].suffixes)


def register(backend: Backend) -> Backend:
    """Add a format to the table (a plug-in, or a test's fake format); returns it. Names must be new."""
    if backend.name in BACKENDS or backend.runtime in RUNTIMES:
        raise UsageError(f"a format named {backend.name!r} or a runtime {backend.runtime!r} is already registered")
    BACKENDS[backend.name] = backend
    RUNTIMES[backend.runtime] = backend
    return backend


def unregister(name: str) -> None:
    backend = BACKENDS.pop(name)
    RUNTIMES.pop(backend.runtime, None)


def get_backend(name: str) -> Backend:
    """The record for a format name (``onnx``) or a runtime name (``onnxruntime``)."""
    backend = BACKENDS.get(name) or RUNTIMES.get(name)
    if backend is None:
        names = sorted(set(BACKENDS) | set(RUNTIMES))
        raise UsageError(f"unknown format {name!r}{did_you_mean(name, names)} (choose one of {', '.join(BACKENDS)})")
    return backend


def _special(path: Path) -> bool:
    """Whether ``path`` exists as something other than a file or a folder (a device node, a FIFO, a socket)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def readable_name(backend: Backend, output: Path) -> None:
    """A usage error for an artifact name nothing could read back: a suffix that is not the format's
    (``-o m.onnx.json``: the runtime and parity pick the format by the name). Called after the output guard,
    whose message is the better one where such a name is an input (``-o model.pth`` over the checkpoint)."""
    if not any(output.name.lower().endswith(s) for s in backend.suffixes):
        bare = output.with_suffix("")
        fits = any(bare.name.lower().endswith(s) for s in backend.suffixes)
        raise UsageError(f"-o {output}: --format {backend.name} writes {' or '.join(backend.suffixes)}; a name ending "
                         f"in {output.suffix!r} could not be read back by its runtime or by parity (e.g. "
                         f"{bare if fits else str(output) + backend.suffix})")


def artifact_path(backend: Backend, output: str | Path) -> Path:
    """``-o`` as the artifact ``backend`` writes: the record's suffix added to a name that has none (``-o out/mv2``
    -> ``out/mv2.ncnn.param``: a file without one could not be read back, not even by ``--check``), a usage
    error for a name with another format's suffix (``-o m.onnx --format mnn``), and any other name as given
    (the output guard then judges it: ``-o model.pth`` may be the checkpoint itself)."""
    output = Path(output)
    name = output.name.lower()
    if any(name.endswith(s) for s in backend.suffixes) or _special(output):
        return output  # a device node or FIFO as given, for the output guard to refuse (not /dev/null.onnx beside it)
    other = next((b for b in BACKENDS.values() for s in b.suffixes if name.endswith(s)), None)
    if other is not None:
        raise UsageError(f"-o {output}: a name for --format {other.name}; --format {backend.name} writes "
                         f"{' or '.join(backend.suffixes)} (e.g. {output.with_suffix('')}{backend.suffix})")
    return output if output.suffix else output.with_name(output.name + backend.suffix)


def backend_for_path(path: str | Path) -> Backend:
    """The record whose suffixes end ``path``'s name (the longest first: ``.ncnn.param`` before ``.param``)."""
    name = Path(path).name.lower()
    fits = [(len(s), b) for b in BACKENDS.values() for s in b.suffixes if name.endswith(s)]
    if fits:
        return max(fits, key=lambda pair: pair[0])[1]
    known = [s for b in BACKENDS.values() for s in b.suffixes]
    suffix = Path(path).suffix.lower()
    raise UsageError(f"{path}: lightexport cannot tell an artifact's format from suffix {suffix or '(none)'!r}; "
                     f"supported artifacts end in {', '.join(known)}")


def is_artifact(path: str | Path) -> bool:
    """Whether ``path``'s name ends in a registered artifact suffix."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for b in BACKENDS.values() for s in b.suffixes)


#: Modules a format needs besides its runtime (its quantizer, its converter), and the extra that brings each.
EXTRA_MODULES = {"nncf": "pip install 'lightexport[openvino]'"}


def install_hint(module: str) -> str:
    """How to install ``module``: the hint of the record whose runtime it is, once, for every message."""
    hint = next((b.install_hint for b in BACKENDS.values() if b.module == module), None)
    return hint or EXTRA_MODULES.get(module, f"pip install {module}")


def disable_openvino_telemetry() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry from phoning home on our users' behalf.

    ``openvino.convert_model`` and NNCF report usage through ``openvino_telemetry``, which,
    with no consent file (``opt_in_out``'s choice in ``~/intel``), counts as consent: a plain
    FasterNet-T0 export forked 21 processes that each called ``urlopen`` on Google Analytics,
    and wrote ``~/intel/openvino_ga_cid``. Both libraries fall back to a silent stub when
    ``openvino_telemetry`` cannot be imported (as when it is not installed), so marking it
    unimportable before either loads switches telemetry off for this process without
    touching the user's settings. Called when lightexport is imported; harmless to repeat.
    Where the caller imported ``openvino_telemetry`` first, its singleton is declined instead.
    """
    loaded = sys.modules.get("openvino_telemetry")
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import now raises ImportError
    elif loaded is not None:
        try:
            telemetry = loaded.Telemetry()
            telemetry.consent = False
        except Exception:  # noqa: BLE001  # never configured: nothing of ours will configure it with consent
            pass
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's documented switch to its telemetry stub (read at import)


def require_installed(module: str, what: str) -> None:
    """Like :func:`require`, without importing ``module`` (its tools run in child processes, or its import prints)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BackendUnavailableError(f"{what} needs {module}; install it with: {install_hint(module)}")


def require(module: str, what: str | None = None) -> Any:
    """Import a backend's runtime module, or say in one line how to install it (the record's hint, once)."""
    disable_openvino_telemetry()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        needs = f"{what} needs {module}" if what else f"{module} is not installed"
        raise BackendUnavailableError(f"{needs}; install it with: {install_hint(module)}") from exc


def load_plugins(names: str | None = None) -> None:
    """Import the modules ``LIGHTEXPORT_FORMATS`` names (comma-separated), each registering its formats.

    A format outside this package (a team's own runtime, a test's fake one) is a module that
    calls :func:`register` with its record; naming it here makes it known to every process
    lightexport starts, the suite's profile workers included, which inherit the variable.
    """
    for name in (names if names is not None else os.environ.get("LIGHTEXPORT_FORMATS", "")).split(","):
        if name.strip():
            try:
                importlib.import_module(name.strip())
            except ImportError as exc:
                raise UsageError(f"LIGHTEXPORT_FORMATS names {name.strip()!r}, which cannot be imported: "
                                 f"{exc}") from exc


load_plugins()
