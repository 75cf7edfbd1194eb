import json

import pytest
from click.testing import CliRunner

from lightexport.backends import BACKENDS
from lightexport.bench.naive import build_naive
from lightexport.bench.profiles import PROFILES, get_profile
from lightexport.bench.timing import Timing, measure_interleaved, ratio_spread
from lightexport.cli import cli
from lightexport.errors import UsageError
from tests.cli_output import one_line

NAIVE_ONNX, NAIVE_OPENVINO = BACKENDS["onnx"].naive_label, BACKENDS["openvino"].naive_label


def test_interleaving_shuffles_the_order_of_every_round():
    """No candidate always runs right after the same one (rotation would keep the cyclic order)."""
    calls = []
    names = "abcd"
    measure_interleaved({n: (lambda n=n: calls.append(n)) for n in names}, warmup=0, runs=40)
    rounds = [calls[i:i + 4] for i in range(0, len(calls), 4)]
    assert all(sorted(r) == list(names) for r in rounds) and len(rounds) == 40
    predecessors = {n: {r[r.index(n) - 1] for r in rounds if r.index(n) > 0} for n in names}
    assert all(len(p) == 3 for p in predecessors.values()), predecessors  # each followed every other one
    assert {r[0] for r in rounds} == set(names)
    again = []
    measure_interleaved({n: (lambda n=n: again.append(n)) for n in names}, warmup=0, runs=40)
    assert again == calls  # seeded: the same order every time


def test_timing_statistics():
    timings = measure_interleaved({"x": lambda: None}, warmup=1, runs=9, batch=4)
    t = timings["x"]
    assert len(t.samples_ms) == 9 and t.p50 <= t.p90 and t.throughput == pytest.approx(4000 / t.p50)


def test_profiles_are_data():
    assert PROFILES["mobile-1t"].threads == 1 and not PROFILES["mobile-1t"].isa_capped
    assert PROFILES["mobile-2t-128bit"].env["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    with pytest.raises(UsageError, match="mobile-1t"):
        get_profile("iphone")


def test_ratio_spread_uses_per_round_ratios():
    baseline = Timing("naive", [2.0, 4.0, 6.0, 8.0])
    candidate = Timing("ours", [1.0, 4.0, 3.0, 2.0])
    spread = ratio_spread(baseline, candidate)
    assert spread.median_ratio == pytest.approx(5.0 / 2.5)
    assert (spread.low, spread.high) == (1.0, 4.0) and spread.q25 <= spread.q75


def test_bench_cli_times_naive_baselines_beside_lightexport(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "fasternet_t0", "--input-size", "64", "--runs", "3", "--warmup", "1",
                                      "--formats", "onnx,openvino", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(out.read_text())["benchmarks"]
    rows = {r["name"]: r for r in report["results"]}
    from lightexport.parity.runners.openvino import default_execution_precision

    # OpenVINO's default gets rows of its own only where it differs from f32 (bf16 on AVX512-BF16/AMX CPUs;
    # an AVX2-only CPU runs f32 either way: the pinned row alone)
    if default_execution_precision() == "fp32":
        assert list(rows) == ["pytorch-eager", "fasternet_t0.onnx", "fasternet_t0.xml @f32", NAIVE_ONNX,
                              f"{NAIVE_OPENVINO} @f32"]
        assert rows["fasternet_t0.onnx"]["naive_baseline"] == NAIVE_ONNX
        assert rows["fasternet_t0.xml @f32"]["naive_baseline"] == f"{NAIVE_OPENVINO} @f32"
        return
    assert list(rows) == ["pytorch-eager", "fasternet_t0.onnx", "fasternet_t0.xml @f32", "fasternet_t0.xml @default",
                          f"{NAIVE_ONNX}", f"{NAIVE_OPENVINO} @f32", f"{NAIVE_OPENVINO} @default"]
    assert report["ceiling_gflops"] > 0 and rows["pytorch-eager"]["speedup_vs_eager"] == 1.0
    assert all(0 < r["ceiling_share"] for r in rows.values())
    # like with like: each lightexport artifact against the naive path of its runtime and precision setting
    assert rows["fasternet_t0.onnx"]["naive_baseline"] == NAIVE_ONNX
    assert rows["fasternet_t0.xml @f32"]["naive_baseline"] == f"{NAIVE_OPENVINO} @f32"
    assert rows["fasternet_t0.xml @default"]["naive_baseline"] == f"{NAIVE_OPENVINO} @default"
    # the precision OpenVINO actually ran is reported, not assumed: f32 when pinned, the device's choice otherwise
    # (a census of the compiled convolution/matmul layers, e.g. "bf16 x41")
    def ran(name):
        census = dict(part.split(" x") for part in rows[name]["runs_as"].split(", "))
        assert len(census) == 1 and int(*census.values()) > 10, rows[name]["runs_as"]  # fp32 IRs: one precision
        return next(iter(census))

    assert ran("fasternet_t0.xml @f32") == ran(f"{NAIVE_OPENVINO} @f32") == "f32"
    assert ran("fasternet_t0.xml @default") == ran(f"{NAIVE_OPENVINO} @default") in ("f32", "bf16", "f16")
    onnx_row = rows["fasternet_t0.onnx"]
    naive_row = rows[NAIVE_ONNX]
    assert onnx_row["vs_naive"]["ratio"] == pytest.approx(naive_row["p50_ms"] / onnx_row["p50_ms"])
    assert onnx_row["vs_naive"]["min"] <= onnx_row["vs_naive"]["q25"] <= onnx_row["vs_naive"]["q75"]
    assert naive_row["vs_naive"] is None


def test_naive_onnx_is_torchs_default_export(tmp_path):
    """The baseline is what torch.onnx.export writes by default: the unfused module (BatchNorm still there
    before any runtime optimizes it), not a lightexport artifact under another name."""
    import onnx

    from lightexport.loading import load_model

    loaded = load_model("mobilenet_v3_small")
    (artifact,) = build_naive(loaded, 1, 64, tmp_path, ("onnxruntime",))
    assert artifact.label == NAIVE_ONNX and artifact.path.suffix == ".onnx"
    model = onnx.load(str(artifact.path))
    assert artifact.runtime == "onnxruntime"
    assert not any(p.key.startswith("lightexport.") for p in model.metadata_props)
    assert model.opset_import[0].version >= 18  # the dynamo exporter's default, not lightexport's 17


def test_bench_cli_batch_and_f32_only(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "mobilenet_v3_small", "--input-size", "64", "--batch", "2", "--runs",
                                      "2", "--warmup", "0", "--settings", "pinned", "--threads", "2",
                                      "--formats", "onnx,openvino",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(out.read_text())["benchmarks"]
    assert report["batch"] == 2 and report["threads"] == 2
    names = [r["name"] for r in report["results"]]
    assert names == ["pytorch-eager", "mobilenet_v3_small.onnx", "mobilenet_v3_small.xml @f32", NAIVE_ONNX,
                     f"{NAIVE_OPENVINO} @f32"]
    assert all(r["batch"] == 2 for r in report["results"])


def test_bench_layers_lists_the_slowest_and_the_time_by_kind(tmp_path):
    """--layers N: the N slowest layers and every kind's total, which add up to the profiler's total."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "mobilenet_v3_small", "--input-size", "64", "--runs", "2", "--warmup",
                                      "0", "--formats", "onnx", "--layers", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "slowest" in result.output and "Gemm" in result.output  # both tables printed
    (layers,) = json.loads(out.read_text())["benchmarks"][0]["layers"].values()
    slowest, kinds = layers["slowest"], layers["by_kind"]
    assert len(slowest) == 3 and slowest[0]["us"] >= slowest[-1]["us"]
    assert [k["us"] for k in kinds] == sorted((k["us"] for k in kinds), reverse=True)
    assert sum(k["us"] for k in kinds) == pytest.approx(layers["total_us"])
    assert "Conv" in {k["kind"] for k in kinds} and sum(k["layers"] for k in kinds) > 3


def test_bench_int8_exports_keep_what_int8_keep_asks(tmp_path):
    from lightexport.bench.compare import group_targets
    from lightexport.onnxfile import read_metadata
    from lightexport.precision import Precision

    made = {}
    for keep in (None, "3", "0"):
        ((_, (path,)),) = group_targets(["mobilenet_v3_small"], None, None, tmp_path / str(keep), input_size=64,
                                        formats=["onnx"], precisions=[Precision.INT8], int8_keep=keep)
        made[keep] = json.loads(read_metadata(path)["lightexport.int8"])
    # the format's default (lean: a search over none and 3, recorded), then exactly what was asked (no search)
    assert [count for count, _ in made[None]["auto_search"]][0] == 0 and len(made[None]["kept_float"]) in (0, 3)
    assert len(made["3"]["kept_float"]) == 3 and made["0"]["kept_float"] == []
    assert made["3"]["auto_search"] == made["0"]["auto_search"] == []


def test_bench_refuses_int8_keep_without_int8():
    result = CliRunner().invoke(cli, ["bench", "mobilenet_v3_small", "--int8-keep", "auto"])
    assert result.exit_code == 2 and "--int8-keep applies to the int8 exports" in one_line(result)
