"""The PyTorch reference behind the same interface as the artifacts, so comparisons treat both alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from lightexport.errors import UsageError
from lightexport.parity.runners.base import Feed, Outputs, Runner
from lightexport.usercode import flat_outputs


class TorchRunner(Runner):
    """Runs ``module`` in eval mode under ``no_grad``; its train/eval mode is restored on deactivation.

    Outputs are named by ``output_names`` when given; otherwise as exporters flatten them
    (:func:`lightexport.usercode.flat_outputs`: ``out0``, nested ``out1_0``, dict keys).
    """

    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        input_names: Sequence[str] = ("input",),
        output_names: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.module = module
        self.input_names = list(input_names)
        self._given_output_names = list(output_names) if output_names is not None else None
        self._was_training = False

    def activate_impl(self) -> None:
        self._was_training = self.module.training
        self.module.eval()

    def deactivate_impl(self) -> None:
        self.module.train(self._was_training)

    @torch.no_grad()
    def infer_impl(self, feed: Feed) -> Outputs:
        result = self.module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self.input_names))
        pairs = flat_outputs(result)
        names, tensors = [n for n, _ in pairs], [t for _, t in pairs]
        if self._given_output_names is not None:
            if len(self._given_output_names) != len(tensors):
                raise UsageError(f"{self.name}: module returned {len(tensors)} outputs, names given for "
                                 f"{len(self._given_output_names)}: {self._given_output_names}")
            names = self._given_output_names
        self.output_names = names
        return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)}
