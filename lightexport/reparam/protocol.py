"""Let modules reparameterize themselves, through the conventions the ecosystem already uses.

timm's re-parameterizable blocks (MobileOne, RepVGG, FastViT...) expose ``reparameterize()``,
older RepVGG-style code ``switch_to_deploy()``; lightexport's FasterNet block uses the first
to fold its layer scale into its last 1x1 conv. Calling them is how a generic tool supports
architecture-specific folds without knowing each architecture.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lightexport.reparam.report import PassReport

HOOKS = ("reparameterize", "switch_to_deploy")


@torch.no_grad()
def reparameterize(model: nn.Module) -> tuple[nn.Module, PassReport]:
    report = PassReport("reparameterize")
    # Children before parents, so a parent's own hook sees already-folded children.
    for name, module in reversed(list(model.named_modules())):
        if not name:
            continue
        hook = next((getattr(module, h) for h in HOOKS if callable(getattr(module, h, None))), None)
        if hook is not None:
            before = {k: v.clone() for k, v in module.state_dict().items()}
            hook()
            after = module.state_dict()
            if before.keys() != after.keys() or any(not torch.equal(before[k], after[k]) for k in before):
                report.changed.append(name)
    return model, report
