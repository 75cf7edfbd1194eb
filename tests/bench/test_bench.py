import json

import pytest
from click.testing import CliRunner

from lightexport.bench.profiles import PROFILES, get_profile
from lightexport.bench.timing import measure_interleaved
from lightexport.cli import cli
from lightexport.errors import UsageError


def test_interleaving_rotates_who_goes_first():
    calls = []
    measure_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=0, runs=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_timing_statistics():
    timings = measure_interleaved({"x": lambda: None}, warmup=1, runs=9, batch=4)
    t = timings["x"]
    assert len(t.samples_ms) == 9 and t.p50 <= t.p90 and t.throughput == pytest.approx(4000 / t.p50)


def test_profiles_are_data():
    assert PROFILES["mobile-1t"].threads == 1 and not PROFILES["mobile-1t"].isa_capped
    assert PROFILES["mobile-2t-128bit"].env["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    with pytest.raises(UsageError, match="mobile-1t"):
        get_profile("iphone")


def test_bench_cli_reports_ratios_and_ceiling(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "fasternet_t0", "--input-size", "64", "--runs", "3", "--warmup", "1",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(out.read_text())["benchmarks"]
    names = [r["name"] for r in report["results"]]
    assert names == ["pytorch-eager", "fasternet_t0.onnx", "fasternet_t0.xml"]
    assert report["ceiling_gflops"] > 0 and report["results"][0]["speedup_vs_eager"] == 1.0
    assert all(0 < r["ceiling_share"] for r in report["results"])
