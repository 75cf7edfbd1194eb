import json

import pytest
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.cpu import cpu_description
from lightexport.errors import UnknownModelError, UsageError
from lightexport.suite import build_matrix


def test_matrix_skips_combinations_a_backend_cannot_run():
    cells = build_matrix("fasternet_t0", "torch-fused,onnxruntime", "fp32,int8", "mobile-1t", [160])
    assert {(c.backend, c.precision) for c in cells} == {("torch-fused", "fp32"), ("onnxruntime", "fp32"),
                                                          ("onnxruntime", "int8")}


def test_matrix_defaults_to_each_profiles_input_sizes():
    cells = build_matrix("fasternet_t0", "onnxruntime", "fp32", "mobile-1t,mobile-2t")
    assert sorted({(c.profile, c.input_size) for c in cells}) == [("mobile-1t", 160), ("mobile-1t", 224),
                                                                  ("mobile-2t", 160), ("mobile-2t", 224)]


@pytest.mark.parametrize("args, error", [
    (("fasternet_t0", "onnxrt", "fp32", "mobile-1t"), UsageError),
    (("fasternet_t0", "onnxruntime", "fp64", "mobile-1t"), UsageError),
    (("fasternet_t0", "onnxruntime", "fp32", "phone"), UsageError),
    (("fasternet_x9", "onnxruntime", "fp32", "mobile-1t"), UnknownModelError),
])
def test_bad_selections_are_named(args, error):
    with pytest.raises(error):
        build_matrix(*args)


def test_format_names_stand_for_their_runtimes_and_misspellings_get_a_suggestion():
    """``--backends executorch,tflite`` (the names ``export --format`` takes) selects ExecuTorch and LiteRT."""
    cells = build_matrix("fasternet_t0", "tflite,executorch,onnx,onnxruntime", "fp32", "mobile-1t", [64])
    assert [c.backend for c in cells] == ["litert", "executorch", "onnxruntime"]
    with pytest.raises(UsageError, match=r"unknown backend litrt \(did you mean litert\?\)"):
        build_matrix("fasternet_t0", "litrt", "fp32", "mobile-1t")


def test_suite_writes_report_with_plots(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["suite", "--models", "fasternet_t0", "--backends", "torch-fused,onnxruntime",
                                      "--precisions", "fp32,fp16", "--profiles", "mobile-1t,mobile-2t-128bit",
                                      "--input-sizes", "64", "--inputs", "2", "--runs", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"pass": 6, "fail": 0, "error": 0, "skipped": 0}
    capped = [c for c in report["cells"] if c["cell"]["profile"] == "mobile-2t-128bit"]
    assert capped and all(c["cpu_capability"] == "DEFAULT" for c in capped)  # the ISA cap reached the subprocess
    assert "| fasternet_t0 | onnxruntime | fp16 |" in (out / "report.md").read_text()
    # issue #23: each cell's rate as a share of the ceiling its layers ran in (fp16 on x86 computes in fp32 here)
    fp16_native = any(f in cpu_description()[1] for f in ("avx512_fp16", "amx_fp16"))
    for c in report["cells"]:
        judged = "fp16" if fp16_native and c["cell"]["precision"] == "fp16" else "fp32"
        assert c["ceiling"]["precision"] == judged and 0 < c["ceiling"]["share"] < 1, c["ceiling"]
        assert c["ceiling"]["share"] == pytest.approx(c["ceiling"]["gflops"] / c["ceiling"]["ceiling_gflops"])
    md = (out / "report.md").read_text()
    assert "| of ceiling |" in md and "% of fp32 |" in md and "- ceiling: fp32 " in md
    for png in ("errors.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # issue #11 item 21: piped output names each step and cell, and holds no progress-bar line
    assert "build 1/2: fasternet_t0 @64 -> onnxruntime fp32" in result.output
    assert "cell 6/6: fasternet_t0 @64 onnxruntime fp16 on mobile-2t-128bit" in result.output
    before_table = result.output.split("parity suite")[0]
    assert "━" not in before_table and "%" not in before_table


def test_suite_runs_a_given_checkpoint_and_rejects_one_that_does_not_fit(tmp_path):
    import torch

    from lightexport.errors import ExitCode
    from lightexport.model_defs import create_model

    torch.manual_seed(7)  # not the seeded random weights the suite would otherwise use
    model = create_model("fasternet_t0")
    checkpoint = tmp_path / "t0.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    out = tmp_path / "report"
    args = ["suite", "--models", "fasternet_t0", "--backends", "onnxruntime", "--precisions", "fp32",
            "--profiles", "mobile-1t", "--input-sizes", "64", "--inputs", "2", "--runs", "2", "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--weights", f"fasternet_t0={checkpoint}"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["weights"] == {"fasternet_t0": str(checkpoint)}
    (cell,) = report["cells"]
    assert cell["cell"]["weights"] == str(checkpoint) and cell["parity"]["passed"]

    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("head.")}, checkpoint)
    result = CliRunner().invoke(cli, [*args, "--weights", f"fasternet_t0={checkpoint}"])
    assert result.exit_code == ExitCode.INPUT and "head.weight" in result.output, result.output
    result = CliRunner().invoke(cli, [*args, "--weights", f"fasternet_s={checkpoint}"])
    assert result.exit_code == ExitCode.USAGE and "fasternet_s" in result.output


@pytest.mark.slow
def test_an_interrupted_suite_leaves_no_worker_running(tmp_path):  # issue #11 item 12
    """SIGINT to the suite's process alone (``kill -INT PID``, or SIGTERM from ``timeout``): its worker goes too."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def default_sigint():  # a shell's background jobs start with SIGINT ignored; a terminal's do not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    args = [sys.executable, "-m", "lightexport.cli", "suite", "--models", "fasternet_t0", "--backends", "onnxruntime",
            "--precisions", "fp32", "--profiles", "mobile-1t", "--input-sizes", "32", "--inputs", "1",
            "--runs", "100000", "-o", str(tmp_path / "report")]
    suite = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=default_sigint)

    def workers() -> list[int]:
        listing = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(suite.pid)], capture_output=True,
                                 text=True).stdout
        return [int(line.split()[0]) for line in listing.splitlines() if "suite.worker" in line]

    try:
        deadline = time.monotonic() + 120
        while not workers() and suite.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        started = workers()
        if not started and suite.poll() is not None:
            raise AssertionError(f"the suite ended before its worker started:\n{suite.communicate()[0]}")
        assert started, "the worker never started"
        time.sleep(3.0)  # into its timing loop (100,000 runs, the bound): it would go on for minutes
        assert workers() == started, "the worker ended before the interrupt"
        os.kill(suite.pid, signal.SIGINT)
        output, _ = suite.communicate(timeout=30)
        assert suite.returncode == 130, output
        time.sleep(1.0)
        alive = [pid for pid in started if os.path.exists(f"/proc/{pid}")
                 and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
        assert not alive, f"worker(s) {alive} outlived the interrupted suite"
    finally:
        if suite.poll() is None:
            suite.kill()
        for pid in workers():
            os.kill(pid, signal.SIGKILL)


def test_runtime_default_column_says_what_the_layers_ran_in():
    from lightexport.suite.report import _default_run

    def parity(execution):
        return {"also": [{"execution": execution, "passed": True, "outputs": [{"cosine": 0.99712}]}]}

    assert _default_run({"also": []}) == "same"
    # an int8 IR under the bf16 hint: its layers ran u8 and (pinned) f32, not bf16
    assert _default_run(parity("bf16: openvino's default on this CPU; layers ran u8 x50, f32 x3")) == \
        "bf16 hint (u8 x50, f32 x3) pass (cos 0.99712)"
    assert _default_run(parity("bf16: openvino's default on this CPU")) == "bf16 pass (cos 0.99712)"


def test_each_profile_names_its_own_ceiling():
    """A 128-bit profile with the same thread count is judged by its capped kernels: both ceilings are listed."""
    from lightexport.suite.report import ceilings_used

    def cell(profile, gflops):
        return {"cell": {"profile": profile}, "ceiling": {"precision": "fp32", "ceiling_gflops": gflops,
                                                          "library": "ONNX Runtime", "kernel": "conv 3x3 256ch 28px"}}

    lines = ceilings_used([cell("mobile-1t", 94.4), cell("mobile-1t-128bit", 41.0), cell("mobile-1t", 94.4)])
    assert lines == ["fp32 94 GFLOP/s (ONNX Runtime, conv 3x3 256ch 28px), 1 thread(s), mobile-1t",
                     "fp32 41 GFLOP/s (ONNX Runtime, conv 3x3 256ch 28px), 1 thread(s), mobile-1t-128bit"]
