"""Bring your own model (issue #22): a model from the user's code, module, program or whole checkpoint.

Every way in is exported and checked against PyTorch; every way it goes wrong is one line with its
exit code, never a traceback: a missing file (5), a misspelt factory (2, with the close match), a
factory that raises or returns no module (5), a file changed since the export (5).
"""

from __future__ import annotations

import json

import onnx
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from lightexport import api
from lightexport.cli import cli
from lightexport.errors import ExitCode, UsageError
from tests.cli_output import one_line

USER_FILE = '''
import torch
import torch.nn as nn


class Partial_conv3(nn.Module):
    def __init__(self, dim, n_div, forward):
        super().__init__()
        self.dim_conv3 = dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
        self.forward = self.forward_slicing if forward == "slicing" else self.forward_split_cat

    def forward_slicing(self, x):
        x = x.clone()
        x[:, :self.dim_conv3] = self.partial_conv3(x[:, :self.dim_conv3])
        return x

    def forward_split_cat(self, x):
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(x1), x2), 1)


class Net(nn.Module):
    input_shape = (1, 3, 64, 64)

    def __init__(self, width=16, pconv="slicing"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, 4, bias=False), nn.BatchNorm2d(width))
        self.pc = Partial_conv3(width, 4, pconv)
        self.mlp = nn.Sequential(nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
                                 nn.Conv2d(2 * width, width, 1, bias=False))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mlp(self.pc(x))
        return {"features": x, "scores": (self.head(x.mean((2, 3))), x.amax((2, 3)))}


def build(width=16, pconv="slicing"):
    return Net(width, pconv)


def broken():
    return undefined_name  # noqa: F821


def not_a_module():
    return [1, 2, 3]
'''


def run(*args, cwd=None):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(USER_FILE)
    return path


def test_a_factory_in_a_file_exports_checks_and_is_rebuilt_for_parity(user_file, tmp_path):
    out = tmp_path / "net.onnx"
    result = run("onnx", f"{user_file}:build", "--model-arg", "width=8", "--fuse", "--check", "-o", out, "--json",
                 tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    outputs = [o["name"] for o in report["parity"]["outputs"]]
    assert outputs == ["features", "scores_0", "scores_1"]  # nested dict/tuple outputs, named stably
    judged = {o["name"]: o["top1"] for o in report["parity"]["outputs"]}
    assert judged["scores_0"] is not None and judged["scores_1"] is None  # top-1 only where a Linear decides
    pconv = next(p for p in report["export"]["passes"] if p["name"] == "pconv_form")
    assert pconv["changed"] == ["pc"]  # the user's slicing copy of Partial_conv3, switched
    graph = onnx.load(str(out)).graph
    assert [o.name for o in graph.output] == outputs and not any(n.op_type == "ScatterND" for n in graph.node)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["lightexport.entry"].endswith("mynet.py:build") and json.loads(meta["lightexport.model_args"]) == \
        {"width": 8} and len(meta["lightexport.entry_sha256"]) == 64
    assert run("parity", out).exit_code == 0  # rebuilt from the recorded entry point, arguments and seed
    user_file.write_text(USER_FILE + "\n# edited\n")
    result = run("parity", out)
    assert result.exit_code == ExitCode.INPUT and "changed since" in one_line(result)


@pytest.mark.parametrize("source, code, says", [
    ("{file}:biuld", ExitCode.USAGE, "did you mean build"),
    ("{file}:broken", ExitCode.INPUT, "NameError"),
    ("{file}:not_a_module", ExitCode.INPUT, "returned a list, not a torch.nn.Module"),
    ("{dir}/missing.py:build", ExitCode.INPUT, "no such file"),
    ("no_such_package.models:build", ExitCode.USAGE, "no module named"),
])
def test_user_code_mistakes_are_one_line(user_file, source, code, says):
    result = run("onnx", source.format(file=user_file, dir=user_file.parent))
    assert result.exit_code == code, result.output
    assert says in one_line(result)


def test_model_arguments_are_literals_and_checked_against_the_factory(user_file):
    result = run("onnx", f"{user_file}:build", "--model-arg", "widht=8")
    assert result.exit_code == ExitCode.USAGE and "did you mean width" in one_line(result)
    result = run("onnx", f"{user_file}:build", "--model-arg", "width")
    assert result.exit_code == ExitCode.USAGE and "KEY=VALUE" in one_line(result)


def test_the_python_door_takes_a_plain_module(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    result = api.export(module, "onnx", input_shape=(2, 3, 48, 48), fuse=True, output=tmp_path / "m.onnx")
    dims = [d.dim_value for d in onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 48, 48] and "BatchNormalization" not in result.op_histogram
    report = api.verify(result.path, api.from_module(module, input_shape=(2, 3, 48, 48)), progress=False)
    assert report.passed
    with pytest.raises(UsageError, match="give the input shape"):
        api.export(nn.Conv2d(3, 3, 1), "onnx", output=tmp_path / "x.onnx")
    with pytest.raises(UsageError, match="only square inputs"):
        api.export(module, "onnx", input_shape=(1, 3, 32, 48), output=tmp_path / "y.onnx")


def test_whole_model_checkpoints_need_trust(user_file, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mynet_whole", user_file)
    code = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["mynet_whole"] = code
    spec.loader.exec_module(code)
    model = code.build(8).eval()
    torch.save(model, tmp_path / "whole.pt")
    torch.save({"model": model.half(), "ema": None, "epoch": 3}, tmp_path / "wrapped.pt")  # a trainer's wrapper
    result = run("onnx", tmp_path / "whole.pt")
    assert result.exit_code == ExitCode.INPUT and "--trust-checkpoint" in one_line(result)
    for name in ("whole.pt", "wrapped.pt"):
        result = run("onnx", tmp_path / name, "--trust-checkpoint", "--check", "-o", tmp_path / f"{name}.onnx")
        assert result.exit_code == 0, result.output
    sys.modules.pop("mynet_whole")


def test_a_lightning_state_dict_loads_into_the_factorys_module(user_file, tmp_path):
    module = api.load(f"{user_file}:build").module
    torch.save({"state_dict": {f"model.{k}": v for k, v in module.state_dict().items()}, "epoch": 1},
               tmp_path / "lightning.ckpt")
    result = run("onnx", f"{user_file}:build", "--weights", tmp_path / "lightning.ckpt", "--check",
                 "-o", tmp_path / "l.onnx")
    assert result.exit_code == 0, result.output


def test_a_torch_export_program_is_a_source(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    program = torch.export.export(module, (torch.zeros(1, 3, 32, 32),))
    torch.export.save(program, tmp_path / "m.pt2")
    result = api.export(str(tmp_path / "m.pt2"), "onnx", input_shape=(1, 3, 32, 32), output=tmp_path / "m.onnx")
    reference = api.reference_for(result.path)
    assert api.verify(result.path, reference, progress=False).passed
