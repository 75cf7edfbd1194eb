"""First-divergence bisection: which module is the first whose ONNX counterpart departs from PyTorch.

A failed parity cell says *that* an artifact is wrong, not *where*. The TorchScript
exporter names every node after the module scopes it was traced in
(``/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv``), so each module's output has an
ONNX tensor: the output of the last node inside its scope that anything outside the
scope reads. Those tensors are exposed as extra graph outputs, ONNX Runtime runs the
graph with optimizations disabled (a fusion would hide them), forward hooks record
the same modules' outputs in PyTorch, and the pairs are compared in topological order.

The reference must be the *export form* of the model (the artifact's recorded reparam
passes applied, plus the Conv+BN folding the TorchScript exporter does by itself), so
that every module's output means the same thing on both sides; a BatchNorm folded away
becomes an Identity there and, having no node, is skipped.

Graph simplifiers may also move arithmetic across module boundaries (onnxsim folds
GELU's trailing ``* 0.5`` into the next Conv's weights), leaving a module output wrong
by design while its enclosing module's output is right again. Such an entry is
``absorbed``, not ``diverged``: a module only counts as the divergence if every
enclosing module with its own boundary tensor, and the graph outputs, are off too.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

from lightexport.artifacts import strip_prefix
from lightexport.errors import InputFileError, UsageError
from lightexport.onnxfile import load_onnx, read_metadata
from lightexport.parity.metrics import OutputStats, compare
from lightexport.parity.runners import OnnxRuntimeRunner, TorchRunner
from lightexport.reparam import apply_passes

DEFAULT_TOLERANCE = 1e-4  # the fp32 max_rel limit of lightexport.parity.tolerances

OK, DIVERGED, ABSORBED, UNMATCHED = "ok", "diverged", "absorbed", "unmatched"
_STATUS_MARKUP = {OK: "[green]ok[/]", DIVERGED: "[bold red]DIVERGED[/]", ABSORBED: "[yellow]absorbed[/]",
                  UNMATCHED: "[dim]unmatched[/]"}


def scope_paths(node_name: str) -> list[str]:
    """The module paths of every scope a TorchScript-exported node sits in, outermost first.

    Each scope component is relative to its parent, except that a child of a Sequential or
    ModuleList is spelled ``blocks.0`` after ``blocks``, so a component that extends the
    previous one by ``.`` replaces it rather than nesting under it. Names without a leading
    ``/`` (``Constant_3`` from onnxsim, ``node_Conv_11`` from the dynamo exporter) carry no
    scope; ``/Flatten`` is in the root module's own forward, which has no path.
    """
    if not node_name.startswith("/"):
        return []
    parts: list[str] = []
    paths = []
    for component in node_name[1:].split("/")[:-1]:
        if parts and component.startswith(parts[-1] + "."):
            parts[-1] = component
        else:
            parts.append(component)
        paths.append(".".join(parts))
    return paths


def map_scopes(model: onnx.ModelProto) -> dict[str, str]:
    """Module path -> the tensor that is that module's output, in topological order (innermost first on ties).

    Constant nodes never count as a boundary: onnxsim deduplicates constants across scopes,
    so one module's constant is often read by another without being anyone's output.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    members: dict[str, set[int]] = {}
    for index, node in enumerate(graph.node):
        for path in scope_paths(node.name):
            members.setdefault(path, set()).add(index)
    consumers: dict[str, set[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(index)
    found: dict[str, tuple[int, str]] = {}
    for path, nodes in members.items():
        for index in sorted(nodes, reverse=True):
            node = graph.node[index]
            leaving = [t for t in node.output if t in outputs or consumers.get(t, set()) - nodes]
            if node.op_type != "Constant" and leaving:
                found[path] = (index, leaving[0])
                break
    order = sorted(found, key=lambda p: (found[p][0], -p.count(".")))
    return {path: found[path][1] for path in order}


def expose(model: onnx.ModelProto, tensor_names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensor_names``; ONNX Runtime only returns declared outputs.

    Only the element type is declared (shapes stay unknown), so a dynamic-shape graph or
    a shape inference that disagrees with the runtime cannot make the session refuse them.
    """
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    wanted = [n for n in dict.fromkeys(tensor_names) if n not in present]
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    for name in wanted:
        elem_type = types.get(name, onnx.TensorProto.UNDEFINED)
        if elem_type == onnx.TensorProto.UNDEFINED:
            raise InputFileError(f"cannot expose tensor {name!r}: shape inference gives it no element type")
        exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    return exposed


def export_form(module: nn.Module, passes: Sequence[str]) -> nn.Module:
    """The PyTorch model whose modules compute what the artifact's scopes compute.

    ``passes`` are the reparam passes the artifact records. ``fuse_conv_bn`` is added when
    missing because the TorchScript exporter folds eval Conv+BN itself and names the result
    after the conv: without it a conv's output would be compared with its own post-BN output.
    """
    names = list(passes) if "fuse_conv_bn" in passes else [*passes, "fuse_conv_bn"]
    folded, _ = apply_passes(module, names)
    return folded


@dataclass
class LayerDiff:
    """One module's output compared: ``status`` is ok, diverged, absorbed or unmatched (see the module doc)."""

    module: str
    op_type: str
    stats: OutputStats
    status: str = OK

    def to_dict(self) -> dict[str, Any]:
        stats = self.stats.to_dict()
        return {"module": self.module, "op_type": self.op_type, "tensor": stats.pop("name"), "status": self.status,
                **stats}


@dataclass
class BisectReport:
    artifact: str
    tolerance: float
    entries: list[LayerDiff]
    #: the graph outputs against the reference's outputs, in output order
    outputs: list[OutputStats] = field(default_factory=list)

    @property
    def first(self) -> LayerDiff | None:
        return next((e for e in self.entries if e.status == DIVERGED), None)

    @property
    def outputs_diverge(self) -> bool:
        return any(_exceeds(s, self.tolerance) for s in self.outputs)

    @property
    def message(self) -> str:
        first = self.first
        if first is not None:
            detail = first.stats.problem or (f"max_rel {first.stats.max_rel:.3g} over the tolerance "
                                             f"{self.tolerance:g}, cosine {first.stats.cosine:.6f}")
            return f"first divergence: {first.module} ({first.op_type}): {detail}"
        if self.outputs_diverge:
            return (f"no divergence found: no module output departs by more than {self.tolerance:g} (beyond what "
                    f"its enclosing module restores), yet the graph outputs do, so the divergence is inside nodes "
                    f"that carry no module scope (ops in the model's own forward, or nodes a graph pass merged or "
                    f"renamed)")
        absorbed = sum(e.status == ABSORBED for e in self.entries)
        restored = (f"; {absorbed} module output(s) differ but are restored downstream (a graph pass moved "
                    f"arithmetic across their boundaries)") if absorbed else ""
        return f"no divergence: the graph outputs are within {self.tolerance:g} on this input{restored}"

    def render(self, console: Console | None = None, context: int = 5) -> None:
        """The rows around the first divergence (else the last rows), then the verdict."""
        console = console or Console()
        first = self.first
        center = self.entries.index(first) if first is not None else len(self.entries) - 1
        start, stop = max(0, center - context), min(len(self.entries), center + context + 1)
        table = Table(title=f"bisection of {self.artifact} (tolerance max_rel {self.tolerance:g}, "
                            f"rows {start + 1}-{stop} of {len(self.entries)})")
        for column in ("#", "module", "op", "shape", "max rel", "cosine", "status"):
            table.add_column(column, justify="right" if column in ("#", "max rel", "cosine") else "left")
        for i in range(start, stop):
            entry = self.entries[i]
            stats = entry.stats
            table.add_row(str(i + 1), entry.module, entry.op_type, "x".join(map(str, stats.shape)),
                          _sci(stats.max_rel), _cosine(stats.cosine),
                          _STATUS_MARKUP[entry.status], style="bold red" if entry is first else None)
        console.print(table)
        for stats in self.outputs:
            console.print(f"output {stats.name}: max_rel {_sci(stats.max_rel)}, cosine {_cosine(stats.cosine)}"
                          + (f" ({stats.problem})" if stats.problem else ""), highlight=False)
        console.print(self.message, style="bold red" if first is not None else None, highlight=False)

    def to_dict(self) -> dict[str, Any]:
        first = self.first
        return {
            "artifact": self.artifact,
            "tolerance": self.tolerance,
            "first": first.to_dict() if first is not None else None,
            "message": self.message,
            "entries": [e.to_dict() for e in self.entries],
            "outputs": [s.to_dict() for s in self.outputs],
        }


def _sci(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2e}"


def _cosine(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.6f}"


def _exceeds(stats: OutputStats, tolerance: float) -> bool:
    """Non-finite values and shape mismatches fail like a large error does (NaN compares False, hence ``not <=``)."""
    return stats.problem is not None or not stats.max_rel <= tolerance


def _record_outputs(model: nn.Module, paths: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Hooks keeping each module's first output; the TorchScript exporter names a second call ``act_1``."""
    recorded: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def hook(path: str) -> Callable[[nn.Module, Any, Any], None]:
        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            if isinstance(output, (list, tuple)) and len(output) == 1:
                output = output[0]
            if isinstance(output, torch.Tensor) and path not in recorded:
                recorded[path] = output.detach().clone()  # a later in-place op (ReLU(inplace)) would change it
        return keep

    handles = [modules[p].register_forward_hook(hook(p)) for p in paths if p in modules]
    return recorded, handles


def _layer_diff(path: str, op_type: str, tensor: str, reference: np.ndarray, artifact: np.ndarray) -> LayerDiff:
    """Compare a module's output with its boundary tensor, or mark the pair unmatched if their sizes differ.

    Same-size tensors are compared elementwise even if shaped apart (a Flatten folded into a
    Reshape). Different sizes mean the scope's boundary is not the module's output (a node a
    simplifier shared across scopes), which says nothing about the artifact's numbers.
    """
    if reference.size != artifact.size:
        return LayerDiff(path, op_type, compare(tensor, reference, artifact), UNMATCHED)
    return LayerDiff(path, op_type, compare(tensor, reference, artifact.reshape(reference.shape)))


def _judge(entries: list[LayerDiff], tolerance: float, outputs_diverge: bool) -> None:
    """Mark the entries over tolerance: diverged only if the enclosing modules' outputs (and the graph's) are too."""
    by_path = {e.module: e for e in entries if e.status != UNMATCHED}
    for entry in entries:
        if entry.status == UNMATCHED or not _exceeds(entry.stats, tolerance):
            continue
        parts = entry.module.split(".")
        ancestors = (by_path.get(".".join(parts[:i])) for i in range(1, len(parts)))
        healed = any(a is not None and not _exceeds(a.stats, tolerance) for a in ancestors)
        entry.status = ABSORBED if healed or not outputs_diverge else DIVERGED


def bisect_onnx(
    onnx_path_or_model: str | Path | onnx.ModelProto,
    reference_export_form: nn.Module,
    feed: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    input_name: str = "input",
) -> BisectReport:
    """Compare every module's output of an ONNX artifact with the export-form reference's, on one input.

    One input suffices: a wrong weight, a dropped term or a bad rewrite shows on any input,
    and every intermediate tensor of the whole graph is held in memory at once.
    """
    if isinstance(onnx_path_or_model, onnx.ModelProto):
        model, artifact = onnx_path_or_model, "<in-memory ONNX model>"
    else:
        model, artifact = load_onnx(onnx_path_or_model), str(onnx_path_or_model)
    scopes = map_scopes(model)
    if not scopes:
        examples = ", ".join(n.name or f"<unnamed {n.op_type}>" for n in model.graph.node[:3])
        raise InputFileError(
            f"{artifact}: its node names carry no PyTorch module scopes (e.g. {examples}); bisection maps nodes to "
            f"modules by the TorchScript exporter's scoped names (/stages/stages.0/.../Conv), so re-export it with "
            f"the default exporter (--exporter torchscript)")
    modules = dict(reference_export_form.named_modules())
    scopes = {p: t for p, t in scopes.items() if p in modules}
    if not scopes:
        raise UsageError(f"none of the module scopes in {artifact} name a module of the reference "
                         f"({type(reference_export_form).__name__}); is it the model this artifact was exported from?")
    producers = {t: node for node in model.graph.node for t in node.output}
    graph_outputs = [o.name for o in model.graph.output]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exposed.onnx"
        onnx.save(expose(model, list(scopes.values())), str(path))
        with OnnxRuntimeRunner(path, graph_optimization="disable") as runner:
            got = runner.infer({input_name: feed})
    recorded, handles = _record_outputs(reference_export_form, list(scopes))
    try:
        with TorchRunner(reference_export_form, output_names=graph_outputs) as torch_runner:
            expected = torch_runner.infer({"input": feed})
    finally:
        for handle in handles:
            handle.remove()
    outputs = [compare(name, expected[name], got[name]) for name in graph_outputs]
    entries = [_layer_diff(p, producers[t].op_type, t, recorded[p].numpy(), got[t])
               for p, t in scopes.items() if p in recorded]
    report = BisectReport(artifact, tolerance, entries, outputs)
    _judge(entries, tolerance, report.outputs_diverge)
    return report


def bisect_artifact(
    path: str | Path,
    reference: nn.Module,
    feed: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    input_name: str = "input",
) -> BisectReport:
    """``bisect_onnx`` against the unfused ``reference``, brought to export form by the passes the artifact records."""
    if Path(path).suffix.lower() != ".onnx":
        raise UsageError(f"bisection needs an ONNX artifact; {path} is not one (bisect the ONNX it was built from)")
    model = load_onnx(path)
    passes = json.loads(strip_prefix(read_metadata(model)).get("passes", "[]"))
    report = bisect_onnx(model, export_form(reference, passes), feed, tolerance, input_name)
    report.artifact = str(path)
    return report
