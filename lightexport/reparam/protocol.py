"""Let modules reparameterize themselves, through the conventions the ecosystem already uses.

timm's re-parameterizable blocks (MobileOne, RepVGG, FastViT...) expose ``reparameterize()``,
older RepVGG-style code ``switch_to_deploy()``; lightexport's FasterNet block uses the first
to fold its layer scale into its last 1x1 conv. Calling them is how a generic tool supports
architecture-specific folds without knowing each architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn as nn

from lightexport.reparam.report import PassReport

HOOKS = ("reparameterize", "switch_to_deploy")


def _hook(module: nn.Module) -> Callable[[], object] | None:
    """The module's reparameterization hook, if it takes no arguments.

    The names are common enough to mean other things: a VAE's ``reparameterize(mu, logvar)``
    is a sampling step, not a fold, and must not be called.
    """
    for name in HOOKS:
        hook = getattr(module, name, None)
        if callable(hook):
            try:
                inspect.signature(hook).bind()
            except (TypeError, ValueError):
                continue
            return hook
    return None


_Fingerprint = dict[str, tuple[torch.Tensor, int, int]]


def _fingerprint(module: nn.Module) -> _Fingerprint:
    """Which tensors the module holds and their version counters: in-place writes bump the counter.

    Cheaper than copying every weight, which for a whole model would double its memory.
    """
    return {k: (v, v._version, v.data_ptr()) for k, v in module.state_dict(keep_vars=True).items()}


def _changed(before: _Fingerprint, after: _Fingerprint) -> bool:
    if before.keys() != after.keys():
        return True
    return any(before[k][0] is not after[k][0] or before[k][1:] != after[k][1:] for k in before)


@torch.no_grad()
def reparameterize(model: nn.Module) -> tuple[nn.Module, PassReport]:
    """Call every module's argument-free ``reparameterize()`` / ``switch_to_deploy()``; report those that changed."""
    report = PassReport("reparameterize")
    # Children before parents, so a parent's own hook sees already-folded children.
    for name, module in reversed(list(model.named_modules())):
        hook = _hook(module)
        if hook is None:
            continue
        training, before = module.training, _fingerprint(module)
        hook()
        if not training:
            module.eval()  # layers a hook creates start in training mode
        if _changed(before, _fingerprint(module)):
            report.changed.append(name or "<root>")
    return model, report
