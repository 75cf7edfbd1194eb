"""FasterNet's partial convolution has two equivalent forwards; export needs the right one.

``split_cat`` (Split -> Conv -> Concat) exports to three cheap ops. ``slicing`` writes the
conv result into a clone of the input in place, which exporters lower to ScatterND or to
Where/Expand chains that ONNX Runtime and TensorRT run slower, so export uses ``split_cat``.
lightexport's PConv selects its form through a ``form`` property; timm's and the official
code's bind ``forward_<form>`` as the instance's ``forward`` in ``__init__``, so they are switched
by rebinding.

Any other partial convolution is recognized by what it computes, not by its class: a module
whose only child is a stride-1, size-keeping, ungrouped ``c -> c`` convolution, and whose
output equals ``cat(conv(x[:, :c]), x[:, c:])`` on a probe input, is one (a user's own copy of
the official ``Partial_conv3`` under another name, a slicing-only variant). It gets a split-cat
forward that computes the same, checked on the probe before it is kept; what its own forward
did (slicing, or already split-cat) is read from a torch.fx trace and named in the report.
"""

from __future__ import annotations

import types

import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.reparam.report import PassReport

FORMS = ("split_cat", "slicing")
#: Where a partial convolution switched by structure keeps the name of its conv child (in its __dict__).
PCONV_CHILD = "_lightexport_pconv_child"
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
        if current is None:
            continue
        if current == form:
            report.skip(f"already {form}", name)
            continue
        if _form_property(module):
            module.form = form
        else:
            module.forward = types.MethodType(getattr(type(module), f"forward_{form}"), module)
        report.changed.append(name)
    return model, report


def pconv_for_export(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Every PConv in the export form: known ones switched by name, the rest recognized by structure."""
    model, report = set_pconv_form(model, EXPORT_FORM)
    known = {name for name, module in model.named_modules() if _current_form(module) is not None}
    for name, module in model.named_modules():
        if name in known or any(name.startswith(k + ".") for k in known):
            continue
        conv = _lone_conv(module)
        if conv is None:
            continue
        channels = _partial_channels(module, conv)
        if channels is None:
            report.skip("computes more than a partial convolution", name)
            continue
        form = _traced_form(module)
        if form == "split_cat":
            report.skip("already split_cat", name)
            continue
        module.forward = types.MethodType(_split_cat_forward, module)
        # its conv by child name, not as an attribute: a Module attribute would register the conv twice
        module.__dict__[PCONV_CHILD] = next(child for child, m in module.named_children() if m is conv)
        report.changed.append(name)
        report.details[f"{name}: {form or 'its own forward'} -> split_cat"] = channels
    return model, report


def partial_convs(model: nn.Module):
    """(module, its convolution) for every partial convolution in ``model`` the passes know: lightexport's, timm's
    and the official code's by their form, others switched by structure (:func:`pconv_for_export`)."""
    for _, module in model.named_modules():
        child = pconv_child(module)
        if child is not None:
            yield module, getattr(module, child)


def pconv_child(module: nn.Module) -> str | None:
    """The name of a partial convolution's conv child, or None if ``module`` is no partial convolution we know."""
    if PCONV_CHILD in module.__dict__:
        return module.__dict__[PCONV_CHILD]
    if _current_form(module) is None:
        return None
    conv = _lone_conv(module)
    return next((child for child, m in module.named_children() if m is conv), None) if conv is not None else None


def _lone_conv(module: nn.Module) -> nn.Conv2d | None:
    """The module's only child, if it is the convolution of a partial convolution (c -> c, stride 1, same size)."""
    children = list(module.children())
    if len(children) != 1 or not isinstance(children[0], nn.Conv2d) or type(module).forward is nn.Conv2d.forward:
        return None
    conv = children[0]
    own = {id(p) for p in conv.parameters()} | {id(b) for b in conv.buffers()}
    if any(id(p) not in own for p in module.parameters()) or any(id(b) not in own for b in module.buffers()):
        return None
    size_kept = all(p == (k - 1) // 2 * d for p, k, d in zip(conv.padding if isinstance(conv.padding, tuple)
                                                                else (0, 0), conv.kernel_size, conv.dilation))
    if conv.in_channels != conv.out_channels or conv.groups != 1 or conv.stride != (1, 1) or not size_kept:
        return None
    return conv


def _partial_channels(module: nn.Module, conv: nn.Conv2d) -> int | None:
    """The input width at which ``module`` computes cat(conv(first c channels), the rest), or None."""
    import torch

    c = conv.in_channels
    generator = torch.Generator().manual_seed(0)
    for ratio in (4, 2, 3, 5, 6, 8, 16):  # the official n_div is 4
        x = torch.randn(1, c * ratio, 7, 7, generator=generator).to(conv.weight)
        try:
            with torch.no_grad():
                got = module(x.clone())
                want = torch.cat((conv(x[:, :c]), x[:, c:]), 1)
        except Exception:  # noqa: BLE001  # a split sized for another width raises: try the next width
            continue
        close = isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, atol=1e-6,
                                                                                              rtol=1e-5)
        return c * ratio if close else None
    return None


def _traced_form(module: nn.Module) -> str | None:
    """What the module's forward does, from a torch.fx trace: "split_cat", "slicing" (in-place write), or None."""
    import operator

    import torch
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001  # control flow fx cannot trace: the form stays unnamed
        return None
    targets = {node.target for node in graph.nodes}
    if operator.setitem in targets:
        return "slicing"
    if {torch.cat, torch.concat} & targets and ({torch.split, torch.chunk, torch.tensor_split} & targets
                                                or "split" in targets or "chunk" in targets):
        return "split_cat"
    return None


def _split_cat_forward(self: nn.Module, x):
    import torch

    conv = getattr(self, self.__dict__[PCONV_CHILD])
    first, rest = torch.split(x, [conv.in_channels, x.shape[1] - conv.in_channels], dim=1)
    return torch.cat((conv(first), rest), 1)
