"""Bisection names the module where an artifact departs from PyTorch, and only that one."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from lightexport import api
from lightexport.errors import InputFileError, UsageError
from lightexport.loading import LoadedModel, load_model
from lightexport.onnxfile import load_onnx
from lightexport.parity.bisect import (
    ABSORBED,
    DIVERGED,
    OK,
    UNMATCHED,
    bisect_artifact,
    bisect_onnx,
    export_form,
    expose,
    map_scopes,
    scope_paths,
)
from tests.conftest import randomize_bn

SIZE = 64
PLANTED_NODE = "/stages/stages.4/blocks/blocks.3/mlp/mlp.0/Conv"  # FasterNet stage 2 (stages.4), block 3


def scale_initializer(model: onnx.ModelProto, node_name: str, input_index: int, factor: float) -> None:
    """Plant a wrong weight: the test fails loudly if the node or its initializer is not in the graph."""
    node = next(n for n in model.graph.node if n.name == node_name)
    init = next(i for i in model.graph.initializer if i.name == node.input[input_index])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, SIZE, SIZE), dtype=np.float32)


@pytest.fixture(scope="module")
def fasternet(tmp_path_factory) -> tuple[LoadedModel, Path]:
    loaded = load_model("fasternet_t0")
    randomize_bn(loaded.module)
    path = tmp_path_factory.mktemp("bisect") / "t0.onnx"
    api.export(loaded, "onnx", output=path, fuse=True, input_size=SIZE)
    return loaded, path


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        ("/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv",
         ["stages", "stages.0", "stages.0.blocks", "stages.0.blocks.0", "stages.0.blocks.0.mlp",
          "stages.0.blocks.0.mlp.0"]),
        ("/stages/stages.0/blocks/blocks.0/Add", ["stages", "stages.0", "stages.0.blocks", "stages.0.blocks.0"]),
        ("/patch_embed/proj/Conv", ["patch_embed", "patch_embed.proj"]),
        ("/features/features.0/features.0.0/Conv", ["features", "features.0", "features.0.0"]),  # nested Sequential
        ("/blocks.0/conv/Conv", ["blocks.0", "blocks.0.conv"]),  # ModuleList indexed in the parent's forward
        ("/blocks.0/act_1/Relu", ["blocks.0", "blocks.0.act_1"]),  # second call of blocks.0.act: no such module
        ("/Flatten", []),  # the root module's own forward
        ("Constant_3", []),  # named by onnxsim
        ("node_Conv_11", []),  # dynamo exporter
        ("", []),
    ],
)
def test_scope_paths(name: str, paths: list[str]) -> None:
    assert scope_paths(name) == paths


def _graph(nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_map_scopes_takes_the_last_node_read_outside_each_scope() -> None:
    model = _graph([
        helper.make_node("Constant", [], ["half"], "/blk/act/Constant",
                         value=numpy_helper.from_array(np.full(1, 0.5, np.float32))),
        helper.make_node("Relu", ["input"], ["r"], "/blk/act/Relu"),
        helper.make_node("Mul", ["r", "half"], ["m"], "/blk/act/Mul"),
        helper.make_node("Add", ["m", "input"], ["a"], "/blk/Add"),
        helper.make_node("Mul", ["a", "half"], ["h"], "/head/Mul"),  # reads blk.act's constant: not its output
        helper.make_node("Neg", ["h"], ["out"], "/Neg"),
    ], ["out"])
    assert map_scopes(model) == {"blk.act": "m", "blk": "a", "head": "h"}

    exposed = expose(model, ["m", "a", "out"])
    assert [o.name for o in exposed.graph.output] == ["out", "m", "a"]
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in exposed.graph.output)
    assert [o.name for o in model.graph.output] == ["out"]  # the caller's model is left alone


def test_a_planted_wrong_weight_is_named(fasternet) -> None:
    loaded, path = fasternet
    model = load_onnx(path)
    scale_initializer(model, PLANTED_NODE, 1, 1.5)
    passes = json.loads(next(p.value for p in model.metadata_props if p.key == "lightexport.passes"))

    report = bisect_onnx(model, export_form(loaded.module, passes), noise())

    assert report.first is not None and report.first.module == "stages.4.blocks.3.mlp.0"
    assert report.first.op_type == "Conv" and report.first.stats.max_rel > 1e-2
    before = report.entries[: report.entries.index(report.first)]
    assert before and all(e.status in (OK, ABSORBED) for e in before)
    status = {e.module: e.status for e in report.entries}
    assert all(status[m] == DIVERGED for m in ("stages.4.blocks.3.mlp", "stages.4.blocks.3", "stages.4", "stages"))
    assert report.outputs_diverge
    out = io.StringIO()
    report.render(Console(file=out, width=200))
    assert "stages.4.blocks.3.mlp.0" in out.getvalue() and "first divergence" in out.getvalue()
    assert json.loads(json.dumps(report.to_dict()))["first"]["module"] == "stages.4.blocks.3.mlp.0"


def test_an_untouched_export_has_no_divergence(fasternet) -> None:
    loaded, path = fasternet
    report = bisect_artifact(path, loaded.module, noise())
    assert report.first is None and not report.outputs_diverge
    assert len(report.entries) > 100  # leaves and containers, BN-turned-Identity modules skipped
    assert not any(e.module.endswith("mlp.1") for e in report.entries)
    assert report.message.startswith("no divergence")


class Body(nn.Module):
    """A container whose inner boundary a graph pass can shift while its own output stays right."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def body() -> tuple[nn.Module, onnx.ModelProto]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = Body().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, SIZE, SIZE),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["out"])
    return module, onnx.load_from_string(buffer.getvalue())


def _rescaled(model: onnx.ModelProto) -> onnx.ModelProto:
    """body.0 and body.1 (ReLU) now output twice the reference, body.2 halves it back: like onnxsim's folds."""
    rescaled = onnx.ModelProto()
    rescaled.CopyFrom(model)
    scale_initializer(rescaled, "/body/body.0/Conv", 1, 2.0)
    scale_initializer(rescaled, "/body/body.0/Conv", 2, 2.0)
    scale_initializer(rescaled, "/body/body.2/Conv", 1, 0.5)
    return rescaled


def test_a_shift_across_a_boundary_is_absorbed(body) -> None:
    module, model = body
    report = bisect_onnx(_rescaled(model), module, noise())
    status = {e.module: e.status for e in report.entries}
    assert status == {"body.0": ABSORBED, "body.1": ABSORBED, "body.2": OK, "body": OK, "head": OK}
    assert report.first is None and "restored downstream" in report.message


def test_the_real_divergence_after_an_absorbed_one_is_named(body) -> None:
    module, model = body
    broken = _rescaled(model)
    scale_initializer(broken, "/head/Conv", 1, 1.5)
    report = bisect_onnx(broken, module, noise())
    assert report.first is not None and report.first.module == "head"
    assert [e.status for e in report.entries[:2]] == [ABSORBED, ABSORBED]


def test_unscoped_divergence_is_reported_as_not_found(body) -> None:
    module, model = body
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    out = broken.graph.output[0].name
    node = next(n for n in broken.graph.node if out in n.output)
    node.output[0] = "pre_neg"
    broken.graph.node.append(helper.make_node("Neg", ["pre_neg"], [out], "/Neg"))  # the root's own forward
    report = bisect_onnx(broken, module, noise())
    assert report.first is None and report.outputs_diverge
    assert all(e.status == OK for e in report.entries)
    assert report.message.startswith("no divergence found")


class SumAfter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(x)
        return y + y.sum(1, keepdim=True)


def test_a_boundary_that_is_not_the_module_output_is_unmatched() -> None:
    """As if a simplifier had merged the root's ReduceSum into act's scope: act's boundary is then the sum."""
    model = _graph([helper.make_node("Relu", ["input"], ["r"], "/act/Relu"),
                    helper.make_node("ReduceSum", ["r", "axes"], ["s"], "/act/ReduceSum", keepdims=1),
                    helper.make_node("Add", ["r", "s"], ["out"], "/Add")], ["out"])
    model.graph.initializer.append(numpy_helper.from_array(np.ones(1, np.int64), "axes"))
    report = bisect_onnx(model, SumAfter(), np.random.default_rng(0).standard_normal((1, 4), dtype=np.float32))
    assert [(e.module, e.status) for e in report.entries] == [("act", UNMATCHED)]
    assert report.first is None and not report.outputs_diverge


def test_unfused_export_matches_its_export_form(classifier, classifier_onnx) -> None:
    """The TorchScript exporter folds Conv+BN by itself; the export form must do the same to compare stem.0."""
    report = bisect_artifact(classifier_onnx, classifier, noise())
    assert report.first is None and not report.outputs_diverge
    assert [e.module for e in report.entries if e.module.startswith("stem")] == ["stem.0", "stem.2", "stem"]
    assert all(e.status == OK for e in report.entries)


def test_names_without_module_scopes_are_refused(body) -> None:
    module, _ = body
    dynamo_like = _graph([helper.make_node("Relu", ["input"], ["relu"], "node_relu"),
                          helper.make_node("Neg", ["relu"], ["out"], "node_Neg_1")], ["out"])
    with pytest.raises(InputFileError, match="torchscript"):
        bisect_onnx(dynamo_like, module, noise())


def test_scopes_of_another_model_are_refused(body) -> None:
    module, _ = body
    other = _graph([helper.make_node("Relu", ["input"], ["out"], "/trunk/Relu")], ["out"])
    with pytest.raises(UsageError, match="exported from"):
        bisect_onnx(other, module, noise())


def test_only_onnx_artifacts_can_be_bisected(tmp_path, classifier) -> None:
    with pytest.raises(UsageError, match="ONNX"):
        bisect_artifact(tmp_path / "model.xml", classifier, noise())
