"""Remove branches that only training runs: auxiliary classifiers (GoogLeNet, Inception v3) and the like.

Such heads stay in a model so that its checkpoints load, yet an eval-mode forward never calls
them: they only cost memory, and a tool that walks modules (fusion, quantization) would still
visit them. Which modules the eval forward uses is read from a torch.fx trace of it in eval mode
(``self.training`` is a plain attribute, so the trace follows the inference path); a module with
parameters or buffers whose every use is absent from that trace is removed (set to ``None``,
which the forward never reads in eval mode). Removing code that does not run cannot change the
output. A model fx cannot trace is left alone, with the reason in the report.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

from lightexport.reparam.report import PassReport


class _CallRecorder(fx.Tracer):
    """Records every module whose forward the trace enters, leaf or not (a non-leaf may read its own buffers
    eagerly, which fx turns into anonymous constants instead of ``get_attr`` nodes)."""

    def __init__(self) -> None:
        super().__init__()
        self.called: set[str] = set()

    def call_module(self, m: nn.Module, forward, args, kwargs):  # noqa: ANN001, ANN201 (fx's signature)
        self.called.add(self.path_of_module(m))
        return super().call_module(m, forward, args, kwargs)


def _used_in_eval(model: nn.Module) -> tuple[set[str], bool] | None:
    """Names the eval forward calls or reads, and whether it folded tensors into constants; None if untraceable."""
    training, attrs = model.training, set(vars(model))
    model.eval()
    tracer = _CallRecorder()
    try:
        graph = tracer.trace(model)
    except Exception:  # fx raises many types for untraceable code; the pass then does nothing
        return None
    finally:
        model.train(training)
        for attr in set(vars(model)) - attrs:  # fx parks constants on the traced module: take them off
            delattr(model, attr)
        for attr in [a for a in model._buffers if a.startswith("_tensor_constant")]:
            del model._buffers[attr]
    reads = {str(node.target) for node in graph.nodes if node.op in ("call_module", "get_attr")}
    constants = any(name.startswith("_tensor_constant") for name in reads)
    return tracer.called | {r for r in reads if not r.startswith("_tensor_constant")}, constants


def _covered(name: str, used: set[str]) -> bool:
    """Whether ``name`` is used itself, inside a used leaf module, or holds a used part."""
    return any(u == name or name.startswith(u + ".") or u.startswith(name + ".") for u in used)


def remove_training_branches(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Drop every submodule with state that the eval-mode forward never uses (outermost such modules only)."""
    report = PassReport("remove_training_branches")
    traced = _used_in_eval(model)
    if traced is None:
        report.details["untraceable"] = type(model).__name__
        return model, report
    used, constants = traced
    removed: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(r + ".") for r in removed):
            continue
        has_state = next(iter(module.parameters()), None) is not None or next(iter(module.buffers()), None) is not None
        if has_state and not _covered(name, used):
            if constants and next(iter(module.buffers()), None) is not None:
                report.skip("buffers_may_be_read_as_constants")  # an uncalled module's buffers may still be read
                continue
            removed.append(name)
    for name in removed:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, None)
        report.changed.append(name)
    return model, report
