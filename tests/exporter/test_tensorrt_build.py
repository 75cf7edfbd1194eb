"""The TensorRT build path on a CPU: the clean failure without TensorRT, and the 10.x/11.x control flow.

TensorRT cannot run here, so the control-flow tests use ``FakeTensorRT``: a stand-in with
exactly the Python API ``build_engine`` calls (names checked against the TensorRT 10.0 and
11.1 bindings), in its 10.x form (``BuilderFlag.FP16``/``INT8`` exist) or its 11.x form
(they do not). Its "engine" is a JSON record of what the builder was asked to do. The
real builds, and their parity, are in test_tensorrt_gpu.py.
"""

import json
import shlex
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lightexport import api
from lightexport.artifacts import read_artifact_metadata
from lightexport.errors import BackendUnavailableError, ExitCode, ExportError, InputFileError, OutputError, UsageError
from lightexport.exporter import tensorrt as trt_exporter
from lightexport.exporter.onnx_fp16 import is_fp16_model
from lightexport.exporter.tensorrt import build_engine
from lightexport.exporter.trt_preflight import PreflightError, make_profile
from lightexport.loading import load_model
from lightexport.parity.runners.tensorrt import TensorRTRunner

# --------------------------------------------------------------------------- a TensorRT stand-in


class _Flags:
    def __init__(self, names):
        for name in names:
            setattr(self, name, name)


class _Tensor:
    def __init__(self, value: onnx.ValueInfoProto):
        self.name = value.name
        self.shape = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


class _Network:
    def __init__(self):
        self.inputs: list[_Tensor] = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class _ParserError:
    def __init__(self, index, node):
        self._index, self._node = index, node

    def node(self):
        return self._index

    def node_name(self):
        return self._node.name

    def node_operator(self):
        return self._node.op_type

    def desc(self):
        return "fake importer refused this node"

    def code(self):
        return types.SimpleNamespace(name="UNSUPPORTED_NODE")


class _Cache:
    def __init__(self, blob, foreign=False):
        self.blob, self.foreign = blob, foreign

    def serialize(self):
        return self.blob


class FakeTensorRT(types.ModuleType):
    """``import tensorrt`` for tests; ``record`` collects what the builder was told."""

    def __init__(self, version: str, engine_ok: bool = True):
        super().__init__("tensorrt")
        self.__version__ = version
        weak = int(version.split(".")[0]) < 11
        self.BuilderFlag = _Flags(["TF32", "REFIT", *(["FP16", "INT8"] if weak else [])])
        self.MemoryPoolType = _Flags(["WORKSPACE"])
        self.record: dict = {"flags": [], "cleared": [], "shapes": {}, "builders": 0}
        fake = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.record["workspace"] = size

            def set_flag(self, flag):
                fake.record["flags"].append(flag)

            def clear_flag(self, flag):
                fake.record["cleared"].append(flag)

            def add_optimization_profile(self, profile):
                fake.record["shapes"] = profile.shapes
                return 0

            def create_timing_cache(self, blob):
                if blob.startswith(b"junk"):
                    return None
                return _Cache(blob + b"+" if blob else b"cache", foreign=blob.startswith(b"other-gpu"))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return not cache.foreign

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = [list(lo), list(opt), list(hi)]

        class Builder:
            def __init__(self, logger):
                self.logger = logger
                fake.record["builders"] += 1

            def create_network(self, flags):
                fake.record["network_flags"] = flags
                return _Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if not engine_ok:
                    self.logger.log(ILogger.ERROR, "out of memory while timing tactics")
                    return None
                self.logger.log(ILogger.WARNING, "weights were clamped")
                return json.dumps(fake.record).encode()

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            def parse_from_file(self, path):
                model = onnx.load(path)
                fake.record["parsed_fp16"] = is_fp16_model(model)
                self.network.inputs = [_Tensor(v) for v in model.graph.input]
                nodes = enumerate(model.graph.node)
                self.errors = [_ParserError(i, n) for i, n in nodes if n.name.startswith("reject")]
                return not self.errors

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

        self.ILogger, self.Builder, self.OnnxParser = ILogger, Builder, OnnxParser


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device, as far as lightexport can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")


def _install(monkeypatch, version="10.13.0", **kwargs) -> FakeTensorRT:
    fake = FakeTensorRT(version, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def _engine_record(path: Path) -> dict:
    return json.loads(path.read_bytes())


# --------------------------------------------------------------------------- small ONNX files


def _onnx(tmp_path, name="m.onnx", dims=(1, 3, 8, 8), node_name="conv", qdq=False):
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name=node_name, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    inits = [w]
    if qdq:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
                 helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["x2"], name="dq"),
                 helper.make_node("Relu", ["x2"], ["y"], name="relu")]
        inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                 numpy_helper.from_array(np.array(0, np.int8), "zp")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims[:1]) + [None] * 3)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="lightexport.model", value="fasternet_t0")
    onnx.save(model, str(tmp_path / name))
    return tmp_path / name


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- the clean failure


def test_without_tensorrt_one_line_error_and_nothing_written(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    onnx_path = _onnx(tmp_path)
    for build in (lambda: api.export(load_model("fasternet_t0"), "tensorrt", output=tmp_path / "t0.engine"),
                  lambda: build_engine(onnx_path, tmp_path / "m.engine")):
        with pytest.raises(BackendUnavailableError) as caught:
            build()
        message = str(caught.value)
        assert "TensorRT" in message and "pip install 'lightexport[tensorrt]'" in message and "\n" not in message
        assert caught.value.exit_code == ExitCode.BACKEND
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        TensorRTRunner(tmp_path / "m.engine").activate()
    assert _listing(tmp_path) == ["m.onnx"]  # no engine, no sidecar, no staging folder, no exported ONNX


def test_without_cuda_one_line_error_and_nothing_written(monkeypatch, tmp_path):
    _install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"CUDA is not available.*--dry-run") as caught:
        build_engine(_onnx(tmp_path), tmp_path / "m.engine")
    assert "\n" not in str(caught.value)
    assert _listing(tmp_path) == ["m.onnx"]


def test_tensorrt_older_than_10_is_refused(monkeypatch, gpu, tmp_path):
    _install(monkeypatch, "8.6.1")
    with pytest.raises(BackendUnavailableError, match="TensorRT 8.6.1 is too old"):
        build_engine(_onnx(tmp_path), tmp_path / "m.engine")


# --------------------------------------------------------------------------- 10.x and 11.x builds

CASES = [
    # version, precision, qdq input, builder flags set, ONNX parsed in fp16
    ("10.13.0", "fp32", False, [], False),
    ("10.13.0", "fp16", False, ["FP16"], False),
    ("10.13.0", "int8", True, ["INT8"], False),
    ("11.1.0", "fp32", False, [], False),
    ("11.1.0", "fp16", False, [], True),
    ("11.1.0", "int8", True, [], False),
]


@pytest.mark.parametrize("version, precision, qdq, flags, parsed_fp16", CASES)
def test_build_takes_the_path_of_the_installed_generation(monkeypatch, gpu, tmp_path, version, precision, qdq, flags,
                                                          parsed_fp16):
    fake = _install(monkeypatch, version)
    result = build_engine(_onnx(tmp_path, qdq=qdq), tmp_path / "m.engine", precision, workspace_gib=0.5)
    record = _engine_record(result.path)
    assert record["flags"] == flags and record["parsed_fp16"] == parsed_fp16
    assert record["cleared"] == (["TF32"] if precision == "fp32" else [])
    assert record["network_flags"] == 0 and record["workspace"] == 1 << 29
    meta = read_artifact_metadata(result.path)  # the sidecar parity reads
    assert meta["precision"] == precision and meta["tensorrt"] == version and meta["model"] == "fasternet_t0"
    assert meta["strongly_typed"] == ("true" if version.startswith("11") else "false")
    assert result.files == [result.path, tmp_path / "m.engine.json"]
    assert any("TensorRT warning: weights were clamped" in n for n in result.notes)
    assert _listing(tmp_path) == ["m.engine", "m.engine.json", "m.onnx"]  # the fp16 ONNX was temporary
    assert fake.record["builders"] == 1


def test_dynamic_input_gets_the_profile(monkeypatch, gpu, tmp_path):
    fake = _install(monkeypatch)
    path = _onnx(tmp_path, dims=("batch", 3, "h", "w"))
    profile = make_profile("x:1x3x32x32", "x:4x3x64x64", "x:8x3x128x128")
    build_engine(path, tmp_path / "m.engine", profile=profile)
    assert fake.record["shapes"] == {"x": [[1, 3, 32, 32], [4, 3, 64, 64], [8, 3, 128, 128]]}
    assert json.loads(read_artifact_metadata(tmp_path / "m.engine")["profile"])["x"]["opt"] == [4, 3, 64, 64]


def test_preflight_runs_before_the_builder(monkeypatch, gpu, tmp_path):
    fake = _install(monkeypatch)
    with pytest.raises(PreflightError, match="no optimization profile"):
        build_engine(_onnx(tmp_path, dims=("batch", 3, 8, 8)), tmp_path / "m.engine")
    with pytest.raises(PreflightError, match="explicit quantization"):
        build_engine(_onnx(tmp_path), tmp_path / "m.engine", "int8")
    assert fake.record["builders"] == 0 and _listing(tmp_path) == ["m.onnx"]


def test_parser_errors_name_the_nodes(monkeypatch, gpu, tmp_path):
    _install(monkeypatch)
    with pytest.raises(ExportError) as caught:
        build_engine(_onnx(tmp_path, node_name="reject/this/Conv"), tmp_path / "m.engine")
    assert "'reject/this/Conv' (Conv): fake importer refused this node [UNSUPPORTED_NODE]" in str(caught.value)
    assert _listing(tmp_path) == ["m.onnx"]


def test_failed_build_says_why_and_leaves_nothing(monkeypatch, gpu, tmp_path):
    _install(monkeypatch, engine_ok=False)
    with pytest.raises(ExportError, match="out of memory while timing tactics"):
        build_engine(_onnx(tmp_path), tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    assert _listing(tmp_path) == ["m.onnx"]


def test_timing_cache_is_reused_and_saved(monkeypatch, gpu, tmp_path):
    _install(monkeypatch)
    cache = tmp_path / "caches" / "t.cache"
    first = build_engine(_onnx(tmp_path), tmp_path / "a.engine", timing_cache=cache)
    assert cache.read_bytes() == b"cache" and not any("cache: reused" in n for n in first.notes)
    second = build_engine(_onnx(tmp_path), tmp_path / "b.engine", timing_cache=cache)
    assert cache.read_bytes() == b"cache+" and any("cache: reused" in n for n in second.notes)
    cache.write_bytes(b"other-gpu")
    assert any("another GPU" in n for n in build_engine(_onnx(tmp_path), tmp_path / "c.engine",
                                                         timing_cache=cache).notes)
    cache.write_bytes(b"junk")
    with pytest.raises(InputFileError, match="not a TensorRT timing cache"):
        build_engine(_onnx(tmp_path), tmp_path / "d.engine", timing_cache=cache)


def test_export_from_a_model_name(monkeypatch, gpu, tmp_path):
    _install(monkeypatch, "11.1.0")
    result = api.export(load_model("fasternet_t0"), "tensorrt", output=tmp_path / "t0.engine", fuse=True, input_size=64,
                        precision="fp16")
    assert _engine_record(result.path)["parsed_fp16"]
    assert [r.name for r in result.passes] and read_artifact_metadata(result.path)["input_size"] == "64"
    assert _listing(tmp_path) == ["t0.engine", "t0.engine.json"]  # the ONNX was exported to a temporary folder


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="int8"), "--int8 needs --calib"),
    (dict(calib="photos"), "--calib goes with --int8"),
    (dict(precision="bf16"), "precision bf16 is not available here; choose one of fp32, fp16, int8"),
])
def test_option_mistakes_are_usage_errors_before_any_work(monkeypatch, tmp_path, kwargs, message):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UsageError, match=message):
        api.export(load_model("fasternet_t0"), "tensorrt", output=tmp_path / "t0.engine", **kwargs)
    with pytest.raises(UsageError, match="--fuse applies to PyTorch models"):
        api.export(_onnx(tmp_path), "tensorrt", fuse=True)


# --------------------------------------------------------------------------- --dry-run


def plan_tensorrt(source, output=None, **options):
    """The dry run's plan, its options built as ``api.export`` builds them (default output included)."""
    from lightexport.backends import BACKENDS
    from lightexport.exporter.base import default_output
    from lightexport.options import ExportOptions

    backend = BACKENDS["tensorrt"]
    opts = ExportOptions.build(backend, output=output, dry_run=True, **options)
    opts = opts.with_output(opts.output or default_output(source, backend, opts.precision))
    return trt_exporter.plan_tensorrt(source, opts)


def test_dry_run_without_tensorrt_writes_the_fp16_onnx_and_the_trtexec_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    (tmp_path / "in").mkdir()
    source = _onnx(tmp_path / "in")
    plan = plan_tensorrt(source, tmp_path / "out dir" / "m.engine", precision="fp16", timing_cache="t.cache",
                         write_onnx=True)
    assert plan.strongly_typed and plan.report.ok
    assert plan.onnx == tmp_path / "out dir" / "m.trtexec.onnx" and is_fp16_model(onnx.load(plan.onnx))
    assert plan.report.source == str(plan.onnx)
    args = shlex.split(plan.trtexec)
    assert args[:4] == ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={tmp_path / 'out dir' / 'm.engine'}",
                        "--stronglyTyped"]
    assert "--timingCacheFile=t.cache" in args and "--fp16" not in args
    assert plan.lines()[-1].strip() == plan.trtexec
    assert _listing(tmp_path) == ["in", "in/m.onnx", "out dir", "out dir/m.trtexec.onnx"]  # no engine


def test_dry_run_weakly_typed_keeps_the_fp32_onnx(monkeypatch, tmp_path):
    _install(monkeypatch, "10.13.0")  # detected without a GPU: dry runs need none
    source = _onnx(tmp_path, dims=("batch", 3, 8, 8))
    plan = plan_tensorrt(source, tmp_path / "m.engine", precision="fp16", opt_shape="x:2x3x8x8")
    assert not plan.strongly_typed and plan.onnx == source
    assert "--fp16" in shlex.split(plan.trtexec) and "--optShapes=x:2x3x8x8" in shlex.split(plan.trtexec)
    blocked = plan_tensorrt(source, tmp_path / "m.engine")
    assert not blocked.report.ok and "no optimization profile" in blocked.report.blockers[0].reason


def test_dry_run_int8_quantizes_from_calibration_images(monkeypatch, tmp_path):
    from lightexport.calib import write_sample_photos

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    photos = write_sample_photos(tmp_path / "photos")
    plan = plan_tensorrt(load_model("fasternet_t0"), tmp_path / "t0.engine", fuse=True, input_size=64,
                         precision="int8", calib=photos, calib_size=4, write_onnx=True)
    assert plan.onnx == tmp_path / "t0.trtexec.onnx"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(plan.onnx).graph.node)
    assert plan.report.ok, plan.report.lines()


def test_dry_run_writes_nothing_unless_asked_and_never_over_a_file(monkeypatch, tmp_path):  # issue #11 item 15
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.chdir(tmp_path)
    users = tmp_path / "fasternet_t0.onnx"
    users.write_bytes(b"the user's fused export")
    plan = plan_tensorrt(load_model("fasternet_t0"), input_size=64, precision="fp16")
    assert plan.report.ok and plan.onnx == Path("fasternet_t0_fp16.trtexec.onnx")
    assert "add --write-onnx" in plan.notes[-1] and f"--onnx={plan.onnx}" in plan.trtexec
    assert _listing(tmp_path) == ["fasternet_t0.onnx"] and users.read_bytes() == b"the user's fused export"
    (tmp_path / "dyn.trtexec.onnx").write_bytes(b"mine")
    with pytest.raises(OutputError, match="dyn.trtexec.onnx exists; a dry run does not overwrite"):
        plan_tensorrt(load_model("fasternet_t0"), "dyn.engine", input_size=64, write_onnx=True)
    assert (tmp_path / "dyn.trtexec.onnx").read_bytes() == b"mine"
    plan_tensorrt(load_model("fasternet_t0"), "out.engine", input_size=64, write_onnx=True)
    assert _listing(tmp_path) == ["dyn.trtexec.onnx", "fasternet_t0.onnx", "out.trtexec.onnx"]
