"""PyTorch -> ncnn (``.ncnn.param`` + ``.ncnn.bin``) through pnnx, with fp32 weights unless fp16 is asked.

pnnx's own defaults are the trap this module exists for: ``pnnx.export`` stores weights in fp16
(``fp16=True``), ignores ``fp16`` when given ``input_shapes``, never checks the converter's exit
code and then imports whatever ``*_pnnx.py`` lies on disk, and writes its intermediates next to
the input file. So the bundled pnnx binary is run directly on a TorchScript trace of the fused
module, every output pointed into a private folder, its exit code and files checked, and only
the ``.param``/``.bin`` pair moved into place (atomically, with a provenance sidecar
``.ncnn.json``: ncnn files hold no metadata). pnnx exits 0 even when it leaves ops ncnn cannot
run (``aten::...``, ``pnnx....`` layers): those are an export error naming the ops.

ncnn's defaults compute in fp16 on ARMv8.2 (``use_fp16_arithmetic``), and there its fp16 depthwise
convolutions are what moves a trained network's outputs: trained MobileNetV2 on an emulated Cortex-A76
(4 decision crops) was 2.9e-2 of range off at the defaults, over the fp16 limit; with fp16 arithmetic off
in only its 17 depthwise convolutions 5.9e-3 (cosine 0.99991), while off in its 35 pointwise ones it stayed
2.8e-2 and off in the classifier 2.9e-2. (A BatchNorm folded into a 9-tap filter gives it a wide range of
weights whose products cancel, which fp16 accumulation does not survive.) So the ``.param`` the exporter
writes sets each depthwise layer's featmask (param 31, bit 0: "no fp16 arithmetic", read by ncnn's
``load_param`` and applied to that layer alone): ncnn's defaults keep fp16 storage everywhere and fp16
arithmetic in the convolutions that hold the MACs. Bit 1 (no fp16 storage) is not usable per layer: ncnn
then feeds the layer its neighbours' fp16 blobs as if fp32 (NaN outputs, measured). x86 has no fp16
arithmetic, so there the mark changes nothing.

int8 is refused: neither the ncnn wheel nor pnnx ships ncnn2table/ncnn2int8 or a quantization
API (``ncnn.quantize_to_int8`` quantizes one Mat). An int8 writer of lightexport's own in ncnn's
layout (measured on trained MobileNetV2, 240 decision crops) kept 72.5 % of all decisions and
96.8 % of confident ones, and ran no faster than fp32 on x86: not a path worth shipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from lightexport.backends import require
from lightexport.errors import BackendUnavailableError, ExportError
from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    example_input,
    prepared_module,
    provenance,
    quiet,
    quiet_processes,
    require_model,
)
from lightexport.exporter.ncnn_files import FEATMASK, NO_FP16_ARITHMETIC, check_pair, read_param
from lightexport.fileio import atomic_outputs
from lightexport.loading import LoadedModel
from lightexport.options import ExportOptions
from lightexport.precision import Precision

#: Layer types pnnx writes for ops it could not lower to ncnn (ncnn would refuse or crash on them).
UNLOWERED = re.compile(r"^(aten::|pnnx\.|F\.|torch\.|nn\.|Tensor\.|prim::)")
PNNX_TIMEOUT_S = 900
#: Layers whose fp16 arithmetic on ARM costs the decisions (see the module docstring).
FP32_ARITHMETIC = frozenset({"ConvolutionDepthWise", "DeconvolutionDepthWise"})


def pnnx_binary() -> Path:
    """The pnnx executable the ``pnnx`` wheel bundles (found without importing the wrapper, which imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("ncnn export needs pnnx; install it with: pip install 'lightexport[ncnn]'")
    binary = Path(next(iter(spec.submodule_search_locations))) / "pnnx"
    if not binary.is_file():
        raise BackendUnavailableError(f"the pnnx wheel has no converter binary at {binary}; reinstall pnnx")
    return binary


def convert(module: torch.nn.Module, example: torch.Tensor, folder: Path, *, fp16: bool) -> tuple[Path, Path]:
    """``module`` traced and converted by pnnx in ``folder``; returns the checked ``.ncnn.param``/``.bin`` there."""
    with torch.no_grad(), quiet():
        traced = torch.jit.trace(module.eval(), example, check_trace=False, strict=False)
    folder = folder.resolve()
    source = folder / "model.pt"
    traced.save(str(source))
    shape = "[" + ",".join(map(str, example.shape)) + "]f32"
    names = {key: folder / f"m.{suffix}" for key, suffix in (
        ("pnnxparam", "pnnx.param"), ("pnnxbin", "pnnx.bin"), ("pnnxpy", "pnnx.py"), ("pnnxonnx", "pnnx.onnx"),
        ("ncnnparam", "ncnn.param"), ("ncnnbin", "ncnn.bin"), ("ncnnpy", "ncnn.py"))}
    args = [str(pnnx_binary()), str(source), f"inputshape={shape}", f"fp16={int(fp16)}", "optlevel=2", "device=cpu",
            *(f"{key}={path}" for key, path in names.items())]
    try:
        done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"pnnx did not finish in {PNNX_TIMEOUT_S} s") from exc
    param, weights = names["ncnnparam"], names["ncnnbin"]
    if done.returncode != 0 or not param.is_file() or not weights.is_file() or not param.stat().st_size:
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        raise ExportError(f"pnnx failed (exit {done.returncode}): {' | '.join(lines[-3:]) or 'no output'}")
    unlowered = sorted({layer.type for layer in read_param(param).layers if UNLOWERED.match(layer.type)})
    if unlowered:
        raise ExportError(f"pnnx left ops ncnn cannot run: {', '.join(unlowered)} (the model uses an operator "
                          "ncnn has no layer for)")
    check_pair(param, weights)
    return param, weights


def mask_fp16_arithmetic(param: Path, types: frozenset[str] = FP32_ARITHMETIC) -> list[str]:
    """Set the no-fp16-arithmetic bit in the featmask of each ``types`` layer of ``param`` (edited in place);
    returns their names. Other bits a layer's mask already has are kept."""
    lines = param.read_text().splitlines()
    masked = []
    for i, line in enumerate(lines[2:], start=2):
        fields = line.split()
        if fields[0] not in types:
            continue
        key = f"{FEATMASK}="
        old = next((f for f in fields if f.startswith(key)), None)
        value = (int(old[len(key):]) if old else 0) | NO_FP16_ARITHMETIC
        fields = [f for f in fields if f is not old] + [f"{key}{value}"]
        lines[i] = " ".join(fields)
        masked.append(fields[1])
    param.write_text("\n".join(lines) + "\n")
    return masked


def export(source: LoadedModel, opts: ExportOptions) -> ExportResult:
    """Write ``OUT.ncnn.param`` + ``OUT.ncnn.bin`` (+ ``OUT.ncnn.json``, the provenance) from a PyTorch model."""
    backend = opts.backend
    loaded = require_model(source, backend)
    require("ncnn", "ncnn export")
    if opts.dynamic:
        raise ExportError("ncnn export takes a fixed input shape (pnnx traces one); drop --dynamic")
    clock = Stopwatch()
    module, reports = prepared_module(loaded, opts)
    example = example_input(loaded, opts)
    fp16 = opts.precision is Precision.FP16
    with torch.inference_mode():
        shapes = [list(t.shape) for t in _flat(module(example))]
    files = backend.files(opts.output)
    work = Path(tempfile.mkdtemp(prefix="lightexport-pnnx-")).resolve()
    try:
        param, weights = convert(module, example, work, fp16=fp16)
        masked = mask_fp16_arithmetic(param)
        check_pair(param, weights)
        meta = provenance(loaded, opts, reports)
        meta["lightexport.ncnn_fp32_arithmetic"] = json.dumps(masked)
        meta["lightexport.ncnn_outputs"] = json.dumps(shapes)
        meta["lightexport.ncnn_weights"] = "fp16" if fp16 else "fp32"
        with atomic_outputs(files) as (tmp_param, tmp_bin, tmp_json):
            shutil.copyfile(param, tmp_param)
            shutil.copyfile(weights, tmp_bin)
            tmp_json.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    histogram = read_param(files[0]).histogram()
    notes = [r.summary() for r in reports if r.count]
    notes.append(f"pnnx, {'fp16' if fp16 else 'fp32'} weights (pnnx's own default is fp16); ncnn's default options "
                 "compute in fp16 where the CPU has it: parity judges both")
    if masked:
        notes.append(f"fp16 arithmetic off in {len(masked)} depthwise convolutions (featmask in the .param): where "
                     "ncnn's ARM default computes in fp16, they compute in fp32 from fp16 storage")
    return ExportResult(format=backend.name, path=files[0], seconds=clock.seconds, precision=opts.precision,
                        files=files, op_histogram=histogram, metadata=meta, notes=notes, passes=reports)


def _flat(result) -> list[torch.Tensor]:
    from lightexport.usercode import flat_outputs

    return [t for _, t in flat_outputs(result)]


def planned_outputs(opts: ExportOptions) -> list[tuple[str, Path]]:
    files = opts.backend.files(opts.output)
    return [("-o/--output (the .ncnn.param)", files[0]), ("the weights (.ncnn.bin, beside -o)", files[1]),
            ("the provenance (.ncnn.json, beside -o)", files[2])]


def naive_export(loaded: LoadedModel, example: torch.Tensor, path: Path) -> Path:
    """``pnnx.export(model, "m.pt", x)`` as a user calls it: the unfused module, pnnx's defaults (fp16 weights)."""
    pnnx = require("pnnx", "the ncnn baseline")
    folder = path.parent / f".naive-pnnx-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_processes():  # pnnx's wrapper lets the converter print its passes to our stdout
            pnnx.export(loaded.module.eval(), str(folder / "m.pt"), (example,))
        param = folder / "m.ncnn.param"
        if not param.is_file():
            raise ExportError(f"naive pnnx.export of {loaded.name} wrote no .ncnn.param")
        os.replace(param, path)
        os.replace(folder / "m.ncnn.bin", path.with_suffix(".bin"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path
