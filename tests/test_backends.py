"""A format is one record plus its own two modules: a fake one, driven through every command.

``tests/fakeformat`` holds the record (``__init__.py``), its exporter and its runner, and nothing
else; with it registered, ``api.export``, ``lightexport export --format``, ``verify`` and
``lightexport parity``, a suite cell (in the profile worker's own process), ``bench`` (with its
naive baseline) and Triton's tensor reading all work without a line changed elsewhere.
The second half checks that no layer outside a format's own modules spells a format's name,
runtime or suffix: that is what would make a new format touch them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import lightexport
import lightexport.cli
from lightexport import api
from lightexport.backends import BACKENDS, unregister

ROOT = Path(lightexport.__file__).parent
FAKE = Path(__file__).parent / "fakeformat"


@pytest.fixture(scope="module")
def fake():
    import tests.fakeformat as module

    if "fake-ts" not in BACKENDS:
        importlib.reload(module)
    yield module.RECORD
    unregister("fake-ts")


@pytest.fixture(scope="module")
def exported(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp("fake") / "t0.ts"
    return api.export("fasternet_t0", "fake-ts", output=out, fuse=True, input_size=64)


def test_the_fake_format_is_a_record_and_two_modules(fake):
    assert sorted(p.name for p in FAKE.glob("*.py")) == ["__init__.py", "exporter.py", "runner.py"]
    assert fake.exporter.startswith("tests.fakeformat.exporter:") and fake.runner.startswith("tests.fakeformat.runner:")


def test_api_export_and_verify(exported, fake):
    assert exported.path.is_file() and exported.format == "fake-ts" and exported.passes
    reference = api.reference_for(exported.path)  # the provenance was read back through the record
    report = api.verify(exported.path, reference, progress=False)
    assert report.passed and report.backend == "fake-jit" and report.outputs[0].max_rel < 1e-5


def test_cli_export_help_check_and_parity(fake, tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(lightexport.cli.cli, ["export", "--help"]).output
    assert "fake-ts" in help_text and ".ts" in help_text
    out = tmp_path / "t0.ts"
    args = ["export", "fasternet_t0", "--format", "fake-ts", "--input-size", "64", "--fuse", "--check", "-o", str(out),
            "--json", str(tmp_path / "r.json")]
    result = runner.invoke(lightexport.cli.cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["parity"]["passed"]
    result = runner.invoke(lightexport.cli.cli, ["export", "fasternet_t0", "--format", "fake-ts", "--opset", "13"])
    assert result.exit_code == 2 and "--opset applies to --format onnx, tensorrt, not fake-ts" in result.output
    result = runner.invoke(lightexport.cli.cli, ["parity", str(out)])
    assert result.exit_code == 0, result.output


def test_suite_cell_runs_in_the_profile_worker(fake, tmp_path, monkeypatch):
    from lightexport.suite.session import run_matrix

    monkeypatch.setenv("LIGHTEXPORT_FORMATS", "tests.fakeformat")  # the worker process registers it too
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))
    outcome = run_matrix("fasternet_t0", "fake-jit", "fp32", "mobile-1t", tmp_path / "report", input_sizes=[64],
                         runs=2)
    (cell,) = outcome.results
    assert outcome.passed and cell["cell"]["backend"] == "fake-jit" and cell["latency_ms"] > 0
    assert (tmp_path / "report" / "errors.png").is_file()


def test_bench_times_it_against_its_naive_path(fake, exported, tmp_path):
    from lightexport.bench.compare import benchmark, naive_for

    loaded = api.reference_for(exported.path)
    naive = naive_for(loaded, [exported.path], tmp_path, input_size=64)
    report = benchmark(loaded, [exported.path], input_size=64, runs=2, warmup=0, naive=naive)
    assert list(report.timings) == ["pytorch-eager", "t0.ts", "naive torch.jit.trace"]
    assert report.naive_of == {"t0.ts": "naive torch.jit.trace"}


def test_triton_reads_its_tensors(fake, exported):
    from lightexport.triton.tensors import read_io, triton_type

    io = read_io(exported.path)
    assert [(t.name, triton_type(t), t.shape) for t in io.inputs] == [("input", "TYPE_FP32", (1, 3, 64, 64))]


def test_a_bare_output_name_gets_the_formats_suffix_and_another_formats_name_is_refused(tmp_path):
    """-o out/mv2 writes what lightexport can read back (out/mv2.ncnn.param), -o m.onnx for MNN is one line."""
    from lightexport.backends import artifact_path, backend_for_path
    from lightexport.errors import UsageError

    for backend in BACKENDS.values():
        made = artifact_path(backend, tmp_path / "model")
        assert made == tmp_path / f"model{backend.suffix}" and backend_for_path(made) is backend
        assert artifact_path(backend, made) == made  # its own suffix is kept, in any case
        upper = tmp_path / f"model{backend.suffix.upper()}"
        assert artifact_path(backend, upper) == upper
    assert artifact_path(BACKENDS["ncnn"], "out/mv2.v2") == Path("out/mv2.v2")  # the user's own suffix: as given
    with pytest.raises(UsageError, match=r"-o m.onnx: a name for --format onnx; --format mnn writes .mnn \(e.g. m."):
        artifact_path(BACKENDS["mnn"], "m.onnx")


def test_export_to_a_bare_name_checks_the_file_it_wrote(tmp_path):
    result = CliRunner().invoke(lightexport.cli.cli, ["onnx", "mobilenet_v3_small", "--input-size", "64", "-o",
                                                      str(tmp_path / "plain"), "--check"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plain.onnx").is_file() and not (tmp_path / "plain").exists()
