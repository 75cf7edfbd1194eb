"""The suite's Python door runs the same matrix the CLI does and returns its results and report files."""

import json

from lightexport.suite import run_matrix


def test_run_matrix_from_python(tmp_path):
    steps = []
    outcome = run_matrix("fasternet_t0", ["torch-fused", "onnxruntime"], "fp32", "mobile-1t", tmp_path / "report",
                         input_sizes=[64], inputs=2, runs=2, on_step=steps.append)
    assert outcome.passed and outcome.counts == {"pass": 2, "fail": 0, "error": 0, "skipped": 0}
    assert [f.name for f in outcome.files] == ["report.json", "report.md", "errors.png", "latency.png"]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["meta"]["backends"] == "torch-fused,onnxruntime" and len(report["cells"]) == 2
    assert steps  # what starts next is told as it starts
