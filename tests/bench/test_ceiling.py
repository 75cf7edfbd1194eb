"""The machine's ceilings: measured per precision from every library's own kernels, cached, and used."""

import json

import pytest

from lightexport.backends import BACKENDS, resolve
from lightexport.bench import ceiling as ceiling_mod
from lightexport.bench.ceiling import Ceiling, Ceilings, ceilings, describe, flops, measure
from lightexport.bench.compare import BenchReport
from lightexport.bench.timing import Timing
from lightexport.cpu import cpu_description

SMALL = (("gemm", 96), ("conv", 16, 12, 3), ("conv", 32, 8, 1))


def test_workload_arithmetic():
    assert flops(("gemm", 4)) == 2 * 4**3
    assert flops(("conv", 8, 10, 3)) == 2 * 8 * 8 * 9 * 100
    assert describe(("conv", 256, 28, 3)) == "conv 3x3 256ch 28px" and describe(("gemm", 512)) == "gemm 512"


@pytest.mark.parametrize("name", ["onnx", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_each_runtime_times_its_own_gemm_and_conv_kernels(name, precision):
    record = BACKENDS[name]
    if not record.available():
        pytest.skip(f"{record.label} is not installed")
    runs = resolve(record.ceiling)(precision, 1, SMALL)
    assert set(runs) == set(SMALL)  # a convolution as well as a GEMM: CNN layers run conv kernels
    assert all(0 < run() < 5 for run in runs.values())


def test_a_precision_without_kernels_has_no_probe():
    assert not resolve(BACKENDS["onnx"].ceiling)("bf16", 1, SMALL)  # ORT has no bf16 CPU GEMM/conv


def test_every_precision_is_measured_and_the_best_library_wins():
    machine = measure(1, SMALL)
    _, flags = cpu_description()
    assert machine.threads == 1 and machine.flags == flags and machine.bandwidth_gbs > 0
    for precision in ("fp32", "int8"):
        found = machine.ceilings[precision]
        assert found.gflops > 0 and found.tried[found.library] == round(found.gflops, 1)
        assert found.gflops >= max(found.tried.values()) - 0.05  # the best of those tried, not the first
        assert found.kernel in {describe(w) for w in SMALL}
        assert "ONNX Runtime" in found.tried
    assert ("bf16" in machine.ceilings) == any(f in flags for f in ("avx512_bf16", "amx_bf16", "bf16"))
    native_fp16 = any(f in flags for f in ("avx512_fp16", "amx_fp16", "asimdhp"))
    assert (machine.ceilings["fp16"].gflops is not None) == native_fp16


def test_ceilings_are_cached_per_machine_and_refreshed_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTEXPORT_CEILINGS", str(tmp_path / "ceilings.json"))
    calls = []

    def fake(threads):
        calls.append(threads)
        return Ceilings(threads, "cpu", [], {}, {"fp32": Ceiling("fp32", 50.0 + len(calls), "x", "gemm 8")}, 9.0)

    monkeypatch.setattr(ceiling_mod, "measure", fake)
    first = ceilings(1)
    assert ceilings(1).of("fp32").gflops == first.of("fp32").gflops == 51.0 and calls == [1]  # read back
    assert ceilings(2).threads == 2 and calls == [1, 2]  # another thread count is another ceiling
    assert ceilings(1, refresh=True).of("fp32").gflops == 53.0 and calls == [1, 2, 1]
    stored = json.loads((tmp_path / "ceilings.json").read_text())
    assert len(stored) == 2 and all(v["ceilings"]["fp32"]["kernel"] == "gemm 8" for v in stored.values())
    (tmp_path / "ceilings.json").write_text("{not json")  # a damaged cache is measured again, not an error
    assert ceilings(1).of("fp32").gflops == 54.0


def _report(gflops: float, p50_ms: float) -> BenchReport:
    machine = Ceilings(1, "cpu", ["avx2"], {}, {"fp32": Ceiling("fp32", 100.0, "ONNX Runtime", "gemm 512"),
                                                  "int8": Ceiling("int8", gflops, "ONNX Runtime", "conv 3x3")}, 20.0)
    report = BenchReport("m", 1, 1, 224, 1.0, machine, judged_as={"q.onnx": "int8"})
    report.timings = {"pytorch-eager": Timing("pytorch-eager", [40.0] * 3), "q.onnx": Timing("q.onnx", [p50_ms] * 3)}
    return report


def test_shares_are_of_the_ceiling_of_the_precision_that_ran():
    report = _report(400.0, 10.0)  # 2 GMAC in 10 ms = 200 GOP/s
    assert report.ceiling_share("q.onnx") == pytest.approx(0.5)  # of int8's 400, not fp32's 100
    assert report.ceiling_share("pytorch-eager") == pytest.approx(0.5)  # 50 GFLOP/s of fp32's 100
    assert report.roofline_ms("q.onnx") == (pytest.approx(5.0), "compute")
    report.bytes_moved = 2e8  # 10 ms at 20 GB/s in fp32; int8 activations and weights move a quarter of that
    assert report.roofline_ms("pytorch-eager") == (pytest.approx(20.0), "compute")
    assert report.roofline_ms("q.onnx") == (pytest.approx(5.0), "compute")
    report.bytes_moved = 8e8
    assert report.roofline_ms("pytorch-eager") == (pytest.approx(40.0), "memory")
    assert report.roofline_ms("q.onnx") == (pytest.approx(10.0), "memory")


def test_a_share_above_the_ceiling_is_flagged_as_the_ceilings_fault(capsys):
    from rich.console import Console

    report = _report(100.0, 10.0)  # 200 GOP/s measured against a 100 GOP/s "ceiling"
    assert report.ceiling_share("q.onnx") > 1
    console = Console(width=400, force_terminal=False)
    report.render(console)
    out = capsys.readouterr().out
    assert "200.0% of int8 (!)" in out and "the ceiling is wrong, not the model fast" in out
    assert "int8 100 GOP/s (ONNX Runtime, conv 3x3)" in out and "cpu (avx2)" in out
