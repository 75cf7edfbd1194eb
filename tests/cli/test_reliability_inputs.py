"""Issue #11, the remaining items: hostile or odd input files get one line of ours and their exit code."""

import os

import pytest
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.errors import ExitCode
from tests.cli_output import one_line as _one_line


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    "content",
    [b"hello\n", b"some text\nmore\n", b"", b"\x80\x02" + bytes(range(256)) * 8, os.urandom(4000)],
    ids=["hello", "two-lines", "empty", "broken-pickle", "random"],
)
def test_garbage_weights_are_one_line_input_errors(tmp_path, content):  # item 4
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    result = run("onnx", "fasternet_t0", "--weights", path, "--input-size", "64", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.INPUT, result.output
    line = _one_line(result)
    assert "w.pth: not a readable PyTorch checkpoint" in line
    assert "weights_only" not in line and "--trust-checkpoint" not in line


@pytest.mark.parametrize("rows,cols", [(100_000_000, 1280), (1_000_000, 1_000_000)])
def test_expanded_tensors_are_refused_before_allocating(tmp_path, rows, cols):  # item 9
    import torch

    from lightexport.model_defs.registry import get_spec

    sd = get_spec("fasternet_t0").build().state_dict()
    sd["head.weight"] = torch.zeros(1, cols).expand(rows, cols)  # 10 MB on disk, 512 GB / 4 TB as shaped
    sd["head.bias"] = torch.zeros(1).expand(rows)
    path = tmp_path / "expanded.pth"
    torch.save(sd, path)
    result = run("onnx", "fasternet_t0", "--weights", path, "--input-size", "64", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.INPUT, result.output
    line = _one_line(result)
    assert "head.weight" in line and "expanded" in line


def test_a_head_that_does_not_fit_is_refused_on_the_meta_device(tmp_path, monkeypatch):  # item 9
    """A wrong-width head is named from the meta-device skeleton; no real model is built for it."""
    import torch

    from lightexport.model_defs.registry import get_spec

    sd = get_spec("fasternet_t0").build().state_dict()
    sd["head.weight"] = torch.zeros(5000, 1000)  # 5000 classes but 1000 inputs where 1280 are needed
    sd["head.bias"] = torch.zeros(5000)
    path = tmp_path / "wide.pth"
    torch.save(sd, path)
    spec = get_spec("fasternet_t0")
    real_builds = []
    original = type(spec).build

    def build(self, **kwargs):
        if torch.empty(0).device.type != "meta":
            real_builds.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(type(spec), "build", build)
    result = run("onnx", "fasternet_t0", "--weights", path, "--input-size", "64", "-o", tmp_path / "x.onnx")
    assert result.exit_code == ExitCode.INPUT and "head.weight checkpoint [5000, 1000] vs model [5000, 1280]" in (
        _one_line(result)
    )
    assert real_builds == []


@pytest.mark.parametrize("name", ["t0_int8.xml", "t0.engine"])
def test_bisect_of_a_non_onnx_artifact_is_refused_up_front(tmp_path, monkeypatch, name):  # item 19
    from lightexport import api

    def no_parity(*_args, **_kwargs):
        raise AssertionError("the parity run started before --bisect was checked")

    monkeypatch.setattr(api, "reference_for", no_parity)
    artifact = tmp_path / name
    artifact.write_text("<net/>")
    result = run("parity", artifact, "--bisect")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--bisect needs an ONNX artifact" in _one_line(result)


def test_trt_dry_run_prints_the_trtexec_line_whole(tmp_path, monkeypatch):  # items 15 and 16
    import shlex
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.chdir(tmp_path)
    result = run("trt", "fasternet_t0", "--input-size", "64", "--fp16", "--dynamic", "--dry-run",
                 "--min-shape", "input:1x3x64x64", "--opt-shape", "input:8x3x64x64", "--max-shape", "input:16x3x64x64",
                 "-o", tmp_path / "a folder with a long name" / "dyn.engine", "--timing-cache", tmp_path / "t.cache")
    assert result.exit_code == 0, result.output
    line = next(x.strip() for x in result.output.splitlines() if x.strip().startswith("trtexec "))
    args = shlex.split(line)  # one line that parses whole: nothing wrapped into the next
    assert len(line) > 80 and args[-1].startswith("--") and any(a.startswith("--maxShapes=") for a in args)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # a dry run writes nothing unless asked
    assert run("trt", "fasternet_t0", "--write-onnx").exit_code == ExitCode.USAGE


@pytest.mark.parametrize("args,name,content", [
    (["openvino"], "junk.onnx", b"hello world\n"),
    (["openvino"], "noise.onnx", bytes(range(256)) * 12),
    (["parity"], "junk.xml", b"<net>\n"),
    (["parity"], "page.xml", b"<html></html>\n"),
])
def test_non_model_files_print_only_our_line(tmp_path, args, name, content):  # item 22
    """OpenVINO's TensorFlow frontend wrote text_format.cc parse errors to fd 2 before our line."""
    import subprocess
    import sys

    pytest.importorskip("openvino")
    (tmp_path / name).write_bytes(content)
    extra = ["-o", str(tmp_path / "x.xml")] if args == ["openvino"] else ["--model", "fasternet_t0"]
    done = subprocess.run([sys.executable, "-m", "lightexport.cli", *args, str(tmp_path / name), *extra],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.INPUT, done.stderr
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / name}"), lines


@pytest.fixture(scope="module")
def t0_checkpoints(tmp_path_factory):
    """A classification checkpoint with randomized BN statistics, and the backbone checkpoint a detector saves."""
    import torch

    from lightexport.model_defs.registry import get_spec
    from tests.conftest import randomize_bn

    folder = tmp_path_factory.mktemp("ckpt")
    classifier = randomize_bn(get_spec("fasternet_t0").build(), seed=5)
    torch.save({"model": classifier.state_dict()}, folder / "t0.pth")
    backbone = randomize_bn(get_spec("fasternet_t0").build(fork_feat=True), seed=6)
    torch.save({"state_dict": backbone.state_dict()}, folder / "t0_det.pth")
    return folder / "t0.pth", folder / "t0_det.pth", classifier.state_dict()


def test_backbone_from_a_classification_checkpoint_starts_identity_norms(t0_checkpoints, tmp_path):  # item 17
    import onnx
    import torch

    from lightexport import api

    cls_path, _, cls_sd = t0_checkpoints
    result = run("onnx", "fasternet_t0", "--features", "--weights", cls_path, "--input-size", "64",
                 "-o", tmp_path / "f.onnx")
    assert result.exit_code == 0, result.output
    assert "warning: t0.pth is a classification checkpoint: the 4 feature norms backbone mode adds " \
           "(norm0, norm2, norm4, norm6) start as the identity" in result.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "f.onnx")).metadata_props}
    assert meta["lightexport.initialized"] == '["norm0", "norm2", "norm4", "norm6"]'
    with pytest.warns(UserWarning, match="feature norms"):
        loaded = api.load("fasternet_t0", weights=cls_path, features=True)
    sd = loaded.module.state_dict()
    for key, value in cls_sd.items():  # every checkpoint tensor the backbone has, loaded as saved
        if not key.startswith(("head.", "avgpool_pre_head.")):
            assert torch.equal(sd[key], value), key
    for norm in ("norm0", "norm2", "norm4", "norm6"):
        assert torch.equal(sd[f"{norm}.weight"], torch.ones_like(sd[f"{norm}.weight"]))
        assert torch.equal(sd[f"{norm}.running_var"], torch.ones_like(sd[f"{norm}.running_var"]))
        assert not sd[f"{norm}.bias"].any() and not sd[f"{norm}.running_mean"].any()


def test_a_backbone_checkpoint_alone_is_identified(t0_checkpoints, tmp_path):  # item 17
    _, det_path, _ = t0_checkpoints
    result = run("onnx", det_path, "--features", "--input-size", "64", "-o", tmp_path / "f.onnx")
    assert result.exit_code == 0, result.output
    without = run("onnx", det_path, "--input-size", "64", "-o", tmp_path / "g.onnx")
    assert without.exit_code == ExitCode.INPUT
    assert "holds a backbone (it fits fasternet_t0 in backbone mode" in _one_line(without)
    assert "pass --features" in without.output



DRIVER = """
import sys, time
import onnx

MARKER = sys.argv[1]


def slow_save(model, path, *args, **kwargs):  # a partial file in the staging folder, then a long write
    with open(path, "wb") as fh:
        fh.write(b"partial")
    open(MARKER, "w").close()  # tells the test the export is mid-write now
    time.sleep(60)


onnx.save = slow_save
from lightexport.cli import main
sys.argv = ["lightexport", *sys.argv[2:]]
main()
"""


def test_sigterm_mid_export_exits_143_and_leaves_nothing(tmp_path):  # item 11, from outside the process
    import signal
    import subprocess
    import sys
    import time

    out, marker = tmp_path / "out", tmp_path / "writing"
    out.mkdir()
    export = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker), "onnx", "fasternet_t0", "--input-size", "64",
                               "-o", str(out / "t0.onnx")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert export.poll() is None and time.monotonic() < deadline, "the export never reached its write"
            time.sleep(0.05)
        assert any(p.name.startswith(".lightexport-") for p in out.iterdir())  # the partial file is staged
        export.send_signal(signal.SIGTERM)  # what timeout, docker stop and CI cancellation send
        output, _ = export.communicate(timeout=60)
    finally:
        if export.poll() is None:
            export.kill()
            export.communicate()
    assert export.returncode == 143, output
    assert "Traceback" not in output
    assert list(out.iterdir()) == []  # no staging folder, no partial file
