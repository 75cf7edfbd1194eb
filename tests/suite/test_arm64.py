"""The arm64 profiles: ARM kernels run in an emulated aarch64 Python, judged against references computed here.

The end-to-end test sets the emulated environment up on first use (Debian's arm64 packages and
aarch64 wheels, about 15 s and 400 MB, then cached in LIGHTEXPORT_ARM64_DIR or ~/.cache/lightexport/arm64)
and runs real cells under qemu-aarch64-static; it skips, saying why, where the emulator is not installed.
"""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from lightexport import api
from lightexport.bench.profiles import get_profile
from lightexport.cli import cli
from lightexport.errors import BackendUnavailableError
from lightexport.loading import load_model
from lightexport.parity import check_parity, make_inputs, runner_for
from lightexport.parity.judge import judge
from lightexport.parity.runners.torch import TorchRunner
from lightexport.suite import build_matrix, run_suite
from lightexport.suite.worker import load_reference, save_reference

needs_qemu = pytest.mark.skipif(not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")),
                                reason="qemu-aarch64-static is not installed (apt-get install qemu-user-static)")


def test_arm64_profiles_run_only_the_runtimes_their_python_has():
    arm = get_profile("arm64-1t")
    assert arm.emulated and arm.runs("onnxruntime") and arm.runs("openvino") and not arm.runs("torch-fused")
    assert arm.runs("executorch")  # through its own C++ runtime (bench/arm64_executorch.py), not its Python one
    host = get_profile("mobile-1t")
    assert not host.emulated and host.runs("torch-fused")
    cells = build_matrix("fasternet_t0", "torch-fused,onnxruntime", "fp32", "arm64-1t")
    assert {c.input_size for c in cells} == {224}


def test_many_decision_crops_under_emulation_are_announced_with_their_cost():
    """240 crops per trained cell under qemu is about an hour per runtime: the suite says so before it starts."""
    from lightexport.suite.matrix import emulation_note

    weights = {"mobilenet_v2": "w"}
    trained = build_matrix("mobilenet_v2", "onnxruntime,openvino", "fp32,int8", "arm64-1t", weights=weights)
    note = emulation_note(trained, 240)
    assert note.startswith("4 trained-weight cell(s) run under emulation (arm64-1t) on 240 decision crops")
    assert "about 1.6 h" in note and "--images 16" in note  # 4 cells x 240 crops x 2 settings x 3 s
    assert emulation_note(trained, 16) is None  # the quick check
    assert emulation_note(build_matrix("mobilenet_v2", "onnxruntime", "fp32", "arm64-1t"), 240) is None  # no weights
    native = build_matrix("mobilenet_v2", "onnxruntime", "fp32", "mobile-1t", weights=weights)
    assert emulation_note(native, 240) is None


def test_stored_reference_judges_like_check_parity(tmp_path):
    """The emulated worker's judge, fed saved outputs, finds what check_parity finds with PyTorch beside it."""
    loaded = load_model("fasternet_t0")
    path = api.export(loaded, "onnx", output=tmp_path / "t0.onnx", input_size=64, precision="fp16").path
    feeds = make_inputs(loaded.spec, 3, input_size=64)
    with TorchRunner(loaded.module) as ref:
        outputs = [ref.infer({"input": x}) for x in feeds]
    save_reference(tmp_path / "ref.npz", feeds, outputs)
    stored_feeds, stored = load_reference(str(tmp_path / "ref.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(feeds, stored_feeds))
    ours = judge(runner_for(path), stored_feeds, stored, precision="fp16")
    theirs = check_parity(runner_for(path), loaded.module, feeds, precision="fp16", progress=False)
    assert ours.outputs[0].max_abs == theirs.outputs[0].max_abs > 0  # fp16 differs from fp32: a real comparison
    assert ours.outputs[0].cosine == theirs.outputs[0].cosine and ours.passed == theirs.passed
    shuffled = [stored[1], stored[0], stored[2]]  # a reference for other inputs must not pass
    assert not judge(runner_for(path), stored_feeds, shuffled, precision="fp16").passed


def test_missing_emulator_is_one_line_exit_7(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64-static on it
    monkeypatch.setenv("LIGHTEXPORT_ARM64_DIR", str(tmp_path / "cache"))
    cells = build_matrix("fasternet_t0", "onnxruntime", "fp32", "arm64-1t", [64])
    with pytest.raises(BackendUnavailableError, match="qemu-user-static"):
        run_suite(cells, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))  # refused before any export
    result = CliRunner().invoke(cli, ["suite", "--models", "fasternet_t0", "--backends", "onnxruntime",
                                      "--precisions", "fp32", "--profiles", "arm64-1t", "-o", str(tmp_path / "r")])
    assert result.exit_code == 7 and "qemu-user-static" in result.output
    setup = CliRunner().invoke(cli, ["arm64-setup"])
    assert setup.exit_code == 7 and "apt-get install qemu-user-static" in setup.output


@pytest.mark.slow
@needs_qemu
def test_arm64_cells_run_arm_kernels_under_emulation(tmp_path):
    """fp32 and fp16 in ONNX Runtime's aarch64 build (set-up included, cached between runs): parity holds, and
    the worker really ran on aarch64, without PyTorch, and reported its latency as emulated."""
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["suite", "--models", "mobilenet_v2", "--backends", "torch-fused,onnxruntime",
                                      "--precisions", "fp32,fp16", "--profiles", "arm64-1t", "--input-sizes", "64",
                                      "--inputs", "2", "--runs", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cells = json.loads((out / "report.json").read_text())["cells"]
    ran = [c for c in cells if "parity" in c]
    assert {c["cell"]["precision"] for c in ran} == {"fp32", "fp16"}
    for c in ran:
        assert c["parity"]["passed"], c["parity"]["failures"]
        assert c["cpu_capability"] == "aarch64" and "qemu" in c["emulated"] and c["eager_ms"] is None
    fp32 = next(c for c in ran if c["cell"]["precision"] == "fp32")
    assert fp32["parity"]["outputs"][0]["max_rel"] < 1e-4
    skipped = [c for c in cells if c.get("skipped")]
    assert [c["cell"]["backend"] for c in skipped] == ["torch-fused"]  # no PyTorch in the emulated Python
    assert "(emulated)" in (out / "report.md").read_text()


@pytest.mark.slow
@needs_qemu
def test_phone_runtimes_run_their_arm_kernels_pinned_and_at_their_arm_defaults(tmp_path):
    """ncnn and MNN on the emulated Cortex-A76 (fp16 arithmetic): each cell judged pinned and at the runtime's own ARM
    default (ncnn's fp16 arithmetic, MNN's precision=low), which must say it ran fp16."""
    pytest.importorskip("ncnn", reason="ncnn is not installed: pip install 'lightexport[ncnn]'")
    pytest.importorskip("MNN", reason="MNN is not installed: pip install 'lightexport[mnn]'")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["suite", "--models", "fasternet_t0", "--backends", "ncnn,mnn",
                                      "--precisions", "fp32", "--profiles", "arm64-1t", "--input-sizes", "64",
                                      "--inputs", "2", "--runs", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cells = json.loads((out / "report.json").read_text())["cells"]
    assert {c["cell"]["backend"] for c in cells} == {"ncnn", "mnn"}
    for c in cells:
        assert c["parity"]["passed"] and c["cpu_capability"] == "aarch64"
        assert c["parity"]["outputs"][0]["max_rel"] < 1e-4  # pinned: fp32 on ARM kernels
        (default,) = [r for r in c["parity"]["also"] if r["precision"] == "fp16"]  # MNN's defaults run fp32 too
        assert "fp16" in default["execution"]
        assert default["outputs"][0]["max_rel"] > 1e-5  # really fp16 arithmetic, not a second fp32 run


@pytest.mark.slow
@needs_qemu
def test_litert_runs_on_arm_kernels_in_fp32_at_its_default(tmp_path):
    """LiteRT's aarch64 runtime (no JAX, no torch) in the emulated worker: XNNPACK at its default computes fp32 on
    the Cortex-A76 too (an fp32 .tflite matches to fp32 limits), fp16 weights and int8 pass their limits."""
    pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed: pip install 'lightexport[litert]'")
    pytest.importorskip("litert_torch", reason="litert-torch is not installed: pip install 'lightexport[litert]'")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["suite", "--models", "fasternet_t0", "--backends", "litert",
                                      "--precisions", "fp32,fp16,int8", "--profiles", "arm64-1t", "--input-sizes", "64",
                                      "--inputs", "2", "--runs", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cells = {c["cell"]["precision"]: c for c in json.loads((out / "report.json").read_text())["cells"]}
    assert set(cells) == {"fp32", "fp16", "int8"}
    assert all(c["parity"]["passed"] and c["cpu_capability"] == "aarch64" for c in cells.values())
    assert cells["fp32"]["parity"]["outputs"][0]["max_rel"] < 1e-5


def test_a_failed_native_setup_reaches_the_runner_as_its_reason(tmp_path, monkeypatch):
    """No cross compiler (no Debian archive): the arm64 profile still starts, and its ExecuTorch cells say why they
    cannot run instead of failing on an import."""
    from lightexport.bench import arm64_executorch
    from lightexport.parity.runners.executorch import ExecuTorchRunner
    from lightexport.parity.runners.executorch_native import LIBRARY_ENV, UNAVAILABLE_ENV

    def no_compiler(step):
        raise BackendUnavailableError("cannot set up the arm64 environment (apt-get update for amd64): no network")

    monkeypatch.setattr(arm64_executorch, "cross_compiler", no_compiler)
    pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install 'lightexport[executorch]'")
    env = arm64_executorch.setup(tmp_path, lambda text: None)
    assert LIBRARY_ENV not in env and "no network" in env[UNAVAILABLE_ENV]
    monkeypatch.setenv(UNAVAILABLE_ENV, env[UNAVAILABLE_ENV])
    with pytest.raises(BackendUnavailableError, match="cannot run in this emulated Python: .*no network"):
        ExecuTorchRunner(tmp_path / "any.pte").activate()


@pytest.mark.slow
@needs_qemu
def test_executorch_runs_its_arm_kernels_without_pytorch(tmp_path):
    """ExecuTorch's aarch64 runtime (the wheel's own libraries, driven by lightexport's C library, no PyTorch) on
    the emulated Cortex-A76: fp32 matches to fp32 limits, fp16 runs ARM's fp16 kernels within its limits, int8
    passes; and in that Python a wrong input shape is one error line, not an abort."""
    pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install 'lightexport[executorch]'")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["suite", "--models", "fasternet_t0", "--backends", "executorch",
                                      "--precisions", "fp32,fp16,int8", "--profiles", "arm64-1t", "--input-sizes", "64",
                                      "--inputs", "2", "--runs", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    cells = {c["cell"]["precision"]: c for c in json.loads((out / "report.json").read_text())["cells"]}
    assert set(cells) == {"fp32", "fp16", "int8"}
    assert all(c["parity"]["passed"] and c["cpu_capability"] == "aarch64" for c in cells.values())
    assert cells["fp32"]["parity"]["outputs"][0]["max_rel"] < 1e-5
    assert cells["fp16"]["parity"]["outputs"][0]["max_rel"] > 1e-4  # ARM's fp16 arithmetic, not a second fp32 run

    import subprocess

    from lightexport.bench.arm64 import emulator

    program = api.export("fasternet_t0", "executorch", output=tmp_path / "t0.pte", input_size=64).path
    emu = emulator()
    probe = ("import sys, numpy as np\nfrom lightexport.parity import runner_for\n"
             "r = runner_for(sys.argv[1], threads=1); r.activate()\n"
             "print('ok', r.infer({'input': np.zeros((1, 3, 64, 64), np.float32)})['logits'].shape)\n"
             "try:\n    r.infer({'input': np.zeros((1, 3, 32, 64), np.float32)})\n"
             "except Exception as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([*emu.command, "-c", probe, str(program)], env={**__import__("os").environ, **emu.env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok (1, 1000)" in done.stdout
    assert "InputFileError" in done.stdout and "cannot run on an input of shape (1, 3, 32, 64)" in done.stdout


def test_only_the_wheels_runtime_libraries_and_headers_are_taken(tmp_path):
    """The aarch64 executorch wheel gives its lib/*.so and include/ tree, nothing else (no Python code, no nested
    libraries, no path leaving the folder); a wheel without libexecutorch.so is refused with its name."""
    import zipfile

    from lightexport.bench.arm64_executorch import _extract

    wheel = tmp_path / "executorch-1.5.1-cp311-cp311-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("executorch/lib/libexecutorch.so", "executorch/lib/libexecutorch_threadpool.so",
                     "executorch/lib/cuda/libother.so", "executorch/lib/README.txt",
                     "executorch/include/executorch/runtime/core/error.h", "executorch/include/../../escape.h",
                     "executorch/runtime/__init__.py"):
            archive.writestr(name, b"x")
    _extract(wheel, tmp_path / "out")
    taken = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert taken == ["include/executorch/runtime/core/error.h", "lib/libexecutorch.so",
                     "lib/libexecutorch_threadpool.so"]
    assert not (tmp_path / "escape.h").exists()
    empty = tmp_path / "executorch-0-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("executorch/__init__.py", b"")
    with pytest.raises(BackendUnavailableError, match="executorch-0-py3-none-any.whl has no lib/libexecutorch.so"):
        _extract(empty, tmp_path / "out2")
