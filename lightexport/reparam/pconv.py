"""FasterNet's partial convolution has two equivalent forwards; export needs the right one.

``split_cat`` (Split -> Conv -> Concat) exports to three cheap ops. ``slicing`` writes the
conv result into a clone of the input in place, which exporters lower to ScatterND or to
Where/Expand chains that ONNX Runtime and TensorRT run slower, so export uses ``split_cat``.
Both lightexport's PConv (a ``form`` property) and timm's (forward bound in ``__init__``)
are handled.
"""

from __future__ import annotations

import types

import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.reparam.report import PassReport

FORMS = ("split_cat", "slicing")


def _current_form(module: nn.Module) -> str | None:
    if hasattr(module, "form") and getattr(module, "form", None) in FORMS:
        return module.form
    bound = getattr(module.__dict__.get("forward"), "__func__", None)
    for form in FORMS:
        if bound is not None and bound is getattr(type(module), f"forward_{form}", None):
            return form
    return None


def set_pconv_form(model: nn.Module, form: str) -> tuple[nn.Module, PassReport]:
    if form not in FORMS:
        raise UsageError(f"PConv form must be one of {', '.join(FORMS)}, got {form!r}")
    report = PassReport("pconv_form", details={"form": form})
    for name, module in model.named_modules():
        current = _current_form(module)
        if current is None or current == form:
            continue
        if "forward" in module.__dict__:  # timm style: the forward is bound per instance
            module.forward = types.MethodType(getattr(type(module), f"forward_{form}"), module)
        else:
            module.form = form
        report.changed.append(name)
    return model, report


def pconv_for_export(model: nn.Module) -> tuple[nn.Module, PassReport]:
    return set_pconv_form(model, "split_cat")
