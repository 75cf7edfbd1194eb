"""Graph cleanups the simplifier misses, each exact (the graph computes the same values).

GhostNet-style modules concatenate two halves and slice the result back to the output width
(``out[:, :oup]``); when the halves already add up to ``oup`` the slice copies the whole tensor.
torch's exporter and onnxsim keep those Slice nodes, and ONNX Runtime then runs 32 full-tensor
copies in GhostNetV2-1.0 that also split its NCHWc layout chains (405 vs 356 nodes after its
optimizer), where ``torch.onnx.export``'s dynamo path drops them.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

INT64_MAX = 2**63 - 1


def _constants(model: onnx.ModelProto) -> dict[str, list[int]]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return {k: [int(x) for x in v.reshape(-1)] for k, v in values.items() if v.dtype.kind in "iu"}


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    return shapes


def _is_noop_slice(node: onnx.NodeProto, constants: dict[str, list[int]], shapes: dict[str, list[int]]) -> bool:
    if len(node.input) < 3 or node.input[0] not in shapes:
        return False
    args = [constants.get(name) if name else None for name in node.input[1:]]
    if any(a is None for a in args[:2]) or any(name and a is None for name, a in zip(node.input[3:], args[2:])):
        return False
    shape = shapes[node.input[0]]
    starts, ends = args[0], args[1]
    axes = args[2] if len(args) > 2 and args[2] is not None else list(range(len(starts)))
    steps = args[3] if len(args) > 3 and args[3] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = shape[axis]
        if step != 1 or start not in (0, -dim) or not (end >= dim or end == INT64_MAX):
            return False
    return True


def drop_noop_slices(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Remove Slice nodes whose constant bounds cover their whole static-shaped input; returns the count."""
    constants, shapes = _constants(model), _static_shapes(model)
    outputs = {o.name for o in model.graph.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rename: dict[str, str] = {}
    kept = []
    for node in out.graph.node:
        renamed = [rename.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(renamed)
        if node.op_type == "Slice" and node.output[0] not in outputs and _is_noop_slice(node, constants, shapes):
            rename[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    if not rename:
        return model, 0
    del out.graph.node[:]
    out.graph.node.extend(kept)
    used = {name for node in kept for name in node.input} | outputs
    for field in (out.graph.value_info, out.graph.initializer):
        keep = [v for v in field if v.name not in rename and (field is out.graph.value_info or v.name in used)]
        del field[:]
        field.extend(keep)
    return out, len(rename)
