"""The paths a user takes without lightexport, built the way they would build them.

A toolkit's speed claim means little against eager PyTorch alone: the honest baseline is
what the runtimes give with their own one-line defaults on the same weights.

- ONNX Runtime: ``torch.onnx.export(model, (x,), path)`` with every default (in torch 2.14
  the dynamo exporter at its default opset, with its ONNX optimizer), run by ONNX Runtime with
  its default graph optimizations.
- OpenVINO: ``ov.convert_model(model, example_input=x)`` (without ``example_input`` the
  frontend scripts the module, which fails on ordinary Python in these models) and compiled as
  it is. The model is saved uncompressed only so it can be loaded by the same runner as every
  other artifact: ``compress_to_fp16`` applies to saving, and a user compiling the converted model
  in memory gets fp32 weights.

Both start from the unfused module: folding BatchNorm is lightexport's job, not the user's.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lightexport.errors import BackendUnavailableError, ExportError
from lightexport.loading import LoadedModel

#: Labels the bench shows for each naive path.
NAIVE_ONNX = "naive torch.onnx.export"
NAIVE_OPENVINO = "naive ov.convert_model"


@dataclass(frozen=True)
class NaiveArtifact:
    label: str
    path: Path
    runtime: str  # "onnxruntime" or "openvino"


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the dynamo exporter prints its progress
    return stack


def naive_onnx(loaded: LoadedModel, example: torch.Tensor, path: Path) -> NaiveArtifact:
    """``torch.onnx.export`` with its defaults, as a user without lightexport calls it."""
    module = loaded.module.eval()
    try:
        with _quiet(), torch.inference_mode(False):
            torch.onnx.export(module, (example,), str(path))
    except Exception as exc:  # torch raises many unrelated types
        raise ExportError(f"naive torch.onnx.export of {loaded.name} failed: {str(exc).strip()[:200]}") from exc
    return NaiveArtifact(NAIVE_ONNX, path, "onnxruntime")


def naive_openvino(loaded: LoadedModel, example: torch.Tensor, path: Path) -> NaiveArtifact:
    """``ov.convert_model(model, example_input=x)``; saved uncompressed, i.e. as compiled in memory."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("the OpenVINO baseline needs OpenVINO: "
                                      "pip install 'lightexport[openvino]'") from exc
    try:
        with _quiet():
            model = ov.convert_model(loaded.module.eval(), example_input=example)
        ov.save_model(model, str(path), compress_to_fp16=False)
    except Exception as exc:
        raise ExportError(f"naive ov.convert_model of {loaded.name} failed: {str(exc).strip()[:200]}") from exc
    return NaiveArtifact(NAIVE_OPENVINO, path, "openvino")


def build_naive(loaded: LoadedModel, batch: int, input_size: int, workdir: Path,
                runtimes: tuple[str, ...] = ("onnxruntime", "openvino")) -> list[NaiveArtifact]:
    """The naive artifacts for ``runtimes``, traced at ``batch`` x ``input_size`` (static, as the defaults do)."""
    example = torch.zeros(batch, 3, input_size, input_size)
    stem = f"{loaded.name}_naive_b{batch}_{input_size}"
    built = []
    if "onnxruntime" in runtimes:
        built.append(naive_onnx(loaded, example, workdir / f"{stem}.onnx"))
    if "openvino" in runtimes:
        built.append(naive_openvino(loaded, example, workdir / f"{stem}.xml"))
    return built
