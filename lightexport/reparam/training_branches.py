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


def _used_in_eval(model: nn.Module) -> set[str] | None:
    """Qualified names the eval forward calls (leaf modules) or reads (parameters, buffers); None if untraceable."""
    training = model.training
    model.eval()
    try:
        graph = fx.Tracer().trace(model)
    except Exception:  # fx raises many types for untraceable code; the pass then does nothing
        return None
    finally:
        model.train(training)
    return {str(node.target) for node in graph.nodes if node.op in ("call_module", "get_attr")}


def _covered(name: str, used: set[str]) -> bool:
    """Whether ``name`` is used itself, inside a used leaf module, or holds a used part."""
    return any(u == name or name.startswith(u + ".") or u.startswith(name + ".") for u in used)


def remove_training_branches(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Drop every submodule with state that the eval-mode forward never uses (outermost such modules only)."""
    report = PassReport("remove_training_branches")
    used = _used_in_eval(model)
    if used is None:
        report.details["untraceable"] = type(model).__name__
        return model, report
    removed: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(r + ".") for r in removed):
            continue
        has_state = next(iter(module.parameters()), None) is not None or next(iter(module.buffers()), None) is not None
        if has_state and not _covered(name, used):
            removed.append(name)
    for name in removed:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, None)
        report.changed.append(name)
    return model, report
