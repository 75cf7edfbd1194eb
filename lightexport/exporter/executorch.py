"""PyTorch -> ExecuTorch (``.pte``) lowered to XNNPACK: fp32, fp16 and int8 (PT2E with XNNPACK's quantizer).

Straight from the fused module through ``torch.export`` (not through ONNX), lowered with
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``. The provenance is a
string constant method of the program itself (``lightexport_meta``), read back without running
anything (:mod:`lightexport.exporter.pte_files`); no sidecar.

What XNNPACK needs from the graph, measured (trained MobileNetV2, FasterNet-T0, 240 decision
crops, executorch 1.5.1, AMD EPYC):

- The example is contiguous NCHW. A ``.pte`` keeps the memory layout of the example it was
  exported from; from a channels-last one it misreads NCHW feeds silently (0.84 of the range off).
- PConv as two slices and a cat: XNNPACK has no ``split_with_sizes``, so FasterNet's split-cat
  form left 13 portable kernels between 14 delegate islands; slices lower into one subgraph.
- fp16: the module in half precision, behind fp32 casts at the edges (users feed what PyTorch
  takes; the casts run as two portable kernels). On x86 without AVX512-FP16 XNNPACK emulates it:
  trained MobileNetV2 keeps 98.75 % of all decisions and every confident one, and runs slower than
  fp32; on ARMv8.2 it runs native fp16 kernels.
- int8 (PT2E, ``XNNPACKQuantizer``: symmetric per-channel weights, histogram activation ranges):
  its ReLU6 is a ``hardtanh`` the quantizer does not fuse with the convolution, so each conv's
  output was quantized before the clamp; treating it as a ReLU there (:class:`_Relu6AsRelu`) lifted
  all-crop agreement 68.8 -> 74.6 %. What stays float is the rest: the first ``--int8-keep``
  convolutions, or named modules; ``auto`` (the default here, the record's ``int8_keep_default``)
  keeps the fewest leading and trailing convolutions whose int8 program reaches the record's
  calibration cosine target (0.998). Before PT2E rounds them, each quantized conv/linear's bias
  absorbs the mean error of its weight rounding on the calibration images
  (:mod:`lightexport.exporter.torch_bias`). Trained MobileNetV2, 240 crops, on an AVX512-VNNI
  EPYC: the old default (three leading convs float) cosine 0.973; auto with the correction 97.5 %
  of all decisions, 100 % of confident ones, 1.26x faster than fp32 on one thread.
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import torch
import torch.nn as nn

from lightexport.backends import get_backend, require
from lightexport.errors import ExportError, UsageError
from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    calibration_preprocess,
    example_input,
    prepared_module,
    provenance,
    quiet,
    require_model,
)
from lightexport.exporter.keep_search import AUTO_ENDS, AUTO_IMAGES, calibration_cosine, search_keep
from lightexport.fileio import atomic_output
from lightexport.loading import LoadedModel
from lightexport.options import ExportOptions
from lightexport.precision import Precision

#: The constant method holding the provenance (a JSON string).
META_METHOD = "lightexport_meta"


def _executorch():
    with quiet():  # torchao's import warns through torch's pytree logger
        require("executorch", "ExecuTorch export")
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower, XnnpackPartitioner


def slice_pconvs(module: nn.Module) -> int:
    """Every partial convolution as ``cat(conv(x[:, :c]), x[:, c:])``: what XNNPACK lowers (it has no split)."""
    from lightexport.reparam.pconv import PCONV_CHILD, pconv_child

    count = 0
    for _, pconv in module.named_modules():
        child = pconv_child(pconv)
        if child is None:
            continue
        pconv.__dict__[PCONV_CHILD] = child  # looked up at call time, so a copy (.half()) uses its own conv
        pconv.forward = types.MethodType(_slice_cat_forward, pconv)
        count += 1
    return count


def _slice_cat_forward(self: nn.Module, x):
    from lightexport.reparam.pconv import PCONV_CHILD

    conv = getattr(self, self.__dict__[PCONV_CHILD])
    c = conv.in_channels
    return torch.cat((conv(x[:, :c]), x[:, c:]), 1)


class _Fp32Edges(nn.Module):
    """fp16 inside, fp32 at the edges: the program takes and returns what the PyTorch model does."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x.to(torch.float16))
        return torch.utils._pytree.tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) else t, out)


def lower(module: nn.Module, example: torch.Tensor, constants: dict[str, str] | None = None,
          partition: bool = True) -> bytes:
    """torch.export -> edge -> XNNPACK partitions -> an ExecuTorch program, as bytes."""
    to_edge_transform_and_lower, XnnpackPartitioner = _executorch()  # noqa: N806
    try:
        with quiet():
            if not isinstance(module, torch.fx.GraphModule):  # a converted PT2E graph refuses eval()
                module = module.eval()
            program = torch.export.export(module, (example,), strict=False)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()] if partition else None,
                                               constant_methods=constants)
            return bytes(edge.to_executorch().buffer)
    except Exception as exc:  # torch.export and the lowering raise many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ExecuTorch lowering failed: {reason}") from exc


class _Relu6AsRelu:
    """While annotating, XNNPACK's quantizer sees ReLU6 (hardtanh) as the ReLU it fuses into the conv before it:
    the conv's output is then quantized once, on the clamped [0, 6], instead of before the clamp."""

    def __enter__(self):
        import executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils as utils

        self.utils, self.original = utils, utils.is_relu_node
        hardtanh = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)

        def is_relu(node):
            return self.original(node) or (node.op == "call_function" and node.target in hardtanh)

        utils.is_relu_node = is_relu
        return self

    def __exit__(self, *exc):
        self.utils.is_relu_node = self.original


def _conv_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


_CONVS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
#: the layers whose biases absorb their weight rounding before PT2E quantizes them
_CORRECTED = (nn.Conv2d, nn.Linear)


def _float_ends(graph: torch.fx.GraphModule, lead: int, trail: int) -> set[str]:
    """The ops before the graph's ``lead``-th convolution and after its last ``trail`` ones: a region kept float.

    Whole regions, not the convolutions alone: keeping 6 leading and 12 trailing convs of trained
    MobileNetV2 float while their adds and activations stayed int8 kept 84 % of decisions; the same
    convs as whole regions (every op before and after) 95 %. Weights (``get_attr``) are never in it."""
    nodes = list(graph.graph.nodes)
    convs = [i for i, n in enumerate(nodes) if n.op == "call_function" and n.target in _CONVS]
    if lead + trail >= len(convs):
        return {n.name for n in nodes if n.op == "call_function"}
    lo, hi = convs[lead], (convs[len(convs) - trail - 1] if trail else len(nodes))
    return {n.name for i, n in enumerate(nodes) if n.op == "call_function" and (i < lo or i > hi)}


def _quantize(module: nn.Module, example: torch.Tensor, batches: list[torch.Tensor], keep: list[str],
              ends: tuple[int, int] = (0, 0)) -> nn.Module:
    """PT2E: annotate (modules in ``keep`` and the ``ends`` regions left float), calibrate on ``batches``, convert."""
    require("torchao", "ExecuTorch int8")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    try:
        with quiet(), _Relu6AsRelu():
            graph = torch.export.export(module.eval(), (example,), strict=False).module()
            floating = _float_ends(graph, *ends) if any(ends) else set()
            if keep or floating:  # set_module_name(name, None) asserts in executorch 1.5.1; a filter leaves them float
                filters = [get_module_name_filter(name) for name in keep]
                quantizer.set_filter_function(
                    lambda node: node.name not in floating and not any(f(node) for f in filters))
            prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        with quiet():
            return convert_pt2e(prepared)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"PT2E int8 quantization failed: {reason}") from exc


def _keep_list(module: nn.Module, keep: int | str | tuple[str, ...]) -> tuple[list[str], tuple[int, int]]:
    """Named modules kept float, and how many leading/trailing convolutions' regions are."""
    convs = _conv_names(module)
    if isinstance(keep, int):
        if keep > len(convs):
            raise UsageError(f"--int8-keep {keep}: the model has {len(convs)} convolutions, so from 0 to "
                             f"{len(convs)} can stay float (all of them is not int8)")
        return convs[:keep], (keep, 0)
    names = dict(module.named_modules())
    missing = [name for name in keep if name not in names]
    if missing:
        raise UsageError(f"int8 keep: no module {missing[0]!r} in the model")
    return list(keep), (0, 0)


def _quantized_layers(module: nn.Module, named: list[str], ends: tuple[int, int]) -> list[str]:
    """The conv and linear layers PT2E will quantize: all but the named modules and the ``ends`` regions (in module
    order, which is the graph's for the networks whose regions :func:`_float_ends` finds)."""
    order = [n for n, m in module.named_modules() if isinstance(m, _CORRECTED)]
    convs = [i for i, n in enumerate(order) if isinstance(module.get_submodule(n), nn.modules.conv._ConvNd)]
    lead, trail = ends
    if lead + trail >= len(convs):
        return []
    lo = convs[lead] if lead else 0
    hi = convs[len(convs) - trail] if trail else len(order)
    return [n for n in order[lo:hi] if not any(n == k or n.startswith(f"{k}.") for k in named)]


def _int8(module: nn.Module, example: torch.Tensor, loaded: LoadedModel, opts: ExportOptions
          ) -> tuple[nn.Module, list[str], list[tuple[int, float]], int, int]:
    """The quantized module, the modules kept float, for ``auto`` the search, the calibration image count, and how
    many layers' biases absorbed their weight rounding (:mod:`lightexport.exporter.torch_bias`)."""
    from lightexport.calib import ImageFolder
    from lightexport.exporter.torch_bias import correct_biases, input_means

    source = ImageFolder(opts.calib, calibration_preprocess(loaded, opts))
    fixed = not opts.dynamic and opts.batch > 1
    batches = [torch.from_numpy(b) for b in source.batches(opts.batch, opts.calib_size, drop_last=fixed)]
    images = sum(len(b) for b in batches)
    means = input_means(module, batches, [n for n, m in module.named_modules() if isinstance(m, _CORRECTED)])

    def quantize(named: list[str], ends: tuple[int, int]) -> tuple[nn.Module, int]:
        wanted = _quantized_layers(module, named, ends)
        corrected, count = correct_biases(module, {n: means[n] for n in wanted if n in means})
        return _quantize(corrected, example, batches, named, ends), count

    if opts.int8_keep != "auto":
        keep, ends = _keep_list(module, opts.int8_keep)
        named = [] if any(ends) else keep  # a count keeps its convs as a region, names as modules
        quantized, corrected = quantize(named, ends)
        return quantized, keep, [], images, corrected
    convs = _conv_names(module)
    check = batches[: max(1, AUTO_IMAGES // opts.batch)]
    with torch.no_grad():
        reference = [torch.cat([module(b) for b in check]).numpy()]

    def build(ends: int):
        keep = convs[:ends] + (convs[-ends:] if ends else [])
        quantized, corrected = quantize([], (ends, ends))
        with torch.no_grad():
            out = [torch.cat([quantized(b) for b in check]).numpy()]
        return calibration_cosine(reference, out), (quantized, keep, corrected)

    target = get_backend("executorch").int8_auto_target
    chosen, results = search_keep((len(convs) - 1) // 2, build, steps=AUTO_ENDS, target=target)
    search = sorted((2 * ends, cosine) for ends, (cosine, _) in results.items())
    quantized, keep, corrected = results[chosen][1]
    return quantized, keep, search, images, corrected


def export(source: LoadedModel, opts: ExportOptions) -> ExportResult:
    """Write ``OUT.pte``: the fused module, lowered to XNNPACK, in fp32, fp16 or int8."""
    backend = opts.backend
    loaded = require_model(source, backend)
    _executorch()
    opts.require_calibration(loaded.name)
    if opts.dynamic:
        raise UsageError("ExecuTorch export takes a fixed input shape here (drop --dynamic)")
    clock = Stopwatch()
    module, reports = prepared_module(loaded, opts)
    module = copy.deepcopy(module) if not reports else module  # the slicing below must not touch the user's model
    sliced = slice_pconvs(module)
    example = example_input(loaded, opts)
    notes = [r.summary() for r in reports if r.count]
    if sliced:
        notes.append(f"{sliced} partial convolutions as slice + cat (XNNPACK has no split: one delegate, not many)")
    meta = provenance(loaded, opts, reports)
    meta["lightexport.outputs"] = json.dumps(loaded.output_names())
    if opts.precision is Precision.FP16:
        module = _Fp32Edges(copy.deepcopy(module).half().eval())
        notes.append("fp16 inside, fp32 input and output (two casts at the edges)")
    elif opts.precision is Precision.INT8:
        module, keep, search, images, corrected = _int8(module, example, loaded, opts)
        notes.append(f"int8 PT2E (XNNPACK quantizer, per-channel weights, histogram ranges, ReLU6 fused) on {images} "
                     f"images from {opts.calib}")
        if corrected:
            notes.append(f"bias correction of int8 weight rounding in {corrected} layers")
        if search:
            notes.append("int8 keep auto: calibration cosine by float-kept convs " +
                         ", ".join(f"{k}: {c:.4f}" for k, c in search))
        if keep:
            notes.append(f"kept in float: {', '.join(keep)}")
        meta["lightexport.int8"] = json.dumps({"weights": "int8 per-channel", "activations": "int8 histogram",
                                               "kept_float": keep, "auto_search": search,
                                               "bias_corrected_layers": corrected})
    program = lower(module, example, {META_METHOD: json.dumps(meta, sort_keys=True)})
    with atomic_output(opts.output) as tmp:
        tmp.write_bytes(program)
    from lightexport.exporter.pte_files import read_pte

    info = read_pte(opts.output)
    forward = info["methods"]["forward"]
    if "XnnpackBackend" not in forward["delegates"]:
        notes.append("warning: nothing was delegated to XNNPACK (every op runs as a portable kernel, ~200x slower)")
    if forward["kernel_calls"]:
        notes.append("outside XNNPACK: " + ", ".join(f"{op} x{n}" for op, n in forward["kernel_calls"].items()))
    histogram = {"XnnpackBackend delegate": forward["delegate_calls"], **forward["kernel_calls"]}
    from collections import Counter

    return ExportResult(format=backend.name, path=opts.output, seconds=clock.seconds, precision=opts.precision,
                        files=[opts.output], op_histogram=Counter(histogram), metadata=meta, notes=notes,
                        passes=reports)


def naive_export(loaded: LoadedModel, example: torch.Tensor, path: Path) -> Path:
    """What ExecuTorch's tutorial does: torch.export of the unfused module, lowered to XNNPACK with its defaults."""
    path.write_bytes(lower(loaded.module, example))
    return path
