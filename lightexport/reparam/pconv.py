"""FasterNet's partial convolution has two equivalent forwards; export needs the right one.

``split_cat`` (Split -> Conv -> Concat) exports to three cheap ops. ``slicing`` writes the
conv result into a clone of the input in place, which exporters lower to ScatterND or to
Where/Expand chains that ONNX Runtime and TensorRT run slower, so export uses ``split_cat``.
lightexport's PConv selects its form through a ``form`` property; timm's binds
``forward_<form>`` as the instance's ``forward`` in ``__init__``, so it is switched by rebinding.
"""

from __future__ import annotations

import types

import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.reparam.report import PassReport

FORMS = ("split_cat", "slicing")
EXPORT_FORM = "split_cat"


def _form_property(module: nn.Module) -> bool:
    return isinstance(getattr(type(module), "form", None), property) and getattr(module, "form", None) in FORMS


def _current_form(module: nn.Module) -> str | None:
    """The module's PConv form, or None if it is not a PConv."""
    if _form_property(module):
        return module.form
    bound = getattr(module.__dict__.get("forward"), "__func__", None)
    if bound is None:
        return None
    return next((form for form in FORMS if bound is getattr(type(module), f"forward_{form}", None)), None)


def set_pconv_form(model: nn.Module, form: str) -> tuple[nn.Module, PassReport]:
    """Switch every PConv in ``model`` to ``form`` ('split_cat' or 'slicing'); outputs are unchanged."""
    if form not in FORMS:
        raise UsageError(f"PConv form must be one of {', '.join(FORMS)}, got {form!r}")
    report = PassReport("pconv_form", details={"form": form})
    for name, module in model.named_modules():
        current = _current_form(module)
        if current is None or current == form:
            continue
        if _form_property(module):
            module.form = form
        else:
            module.forward = types.MethodType(getattr(type(module), f"forward_{form}"), module)
        report.changed.append(name)
    return model, report


def pconv_for_export(model: nn.Module) -> tuple[nn.Module, PassReport]:
    return set_pconv_form(model, EXPORT_FORM)
