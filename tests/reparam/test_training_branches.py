"""Training-only branches (auxiliary classifiers) leave the model; everything the eval forward uses stays."""

import torch
import torch.nn as nn

from lightexport.reparam import apply_passes
from lightexport.reparam.training_branches import remove_training_branches


class WithAux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.aux = nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))  # training only
        self.scale = nn.Parameter(torch.tensor(2.0))  # read directly, not through a module
        self.spare = nn.Linear(2, 2)  # never used at all: removed too, nothing reads it
        self.act = nn.ReLU()  # stateless: not worth reporting, left

    def forward(self, x):
        x = self.stem(x) * self.scale
        if self.training:
            return x, self.aux(x)
        return x


def test_aux_head_and_unused_modules_removed_outputs_kept():
    model = WithAux().eval()
    x = torch.randn(1, 3, 8, 8)
    want = model(x)
    fused, report = remove_training_branches(model)
    assert report.changed == ["aux", "spare"]  # outermost only: not aux.0, aux.1
    assert fused.aux is None and fused.spare is None and isinstance(fused.stem, nn.Conv2d)
    assert fused.scale.item() == 2.0 and not fused.training
    torch.testing.assert_close(fused(x), want, rtol=0, atol=0)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else self.b(x)  # data-dependent: fx cannot follow it


def test_untraceable_model_is_left_alone_and_says_so():
    model, report = remove_training_branches(Untraceable().eval())
    assert model.a is not None and model.b is not None
    assert report.count == 0 and report.details == {"untraceable": "Untraceable"}


def test_runs_in_the_default_passes_on_a_training_mode_copy():
    model = WithAux().train()
    fused, reports = apply_passes(model)
    assert reports[1].name == "remove_training_branches" and reports[1].changed == ["aux", "spare"]
    assert model.aux is not None and model.training  # the caller's model keeps its head


def test_module_whose_buffers_become_trace_constants_is_kept_and_model_left_clean():
    """torchvision's FrozenBatchNorm2d computes with its buffers eagerly; fx records constants, not reads."""
    frozen = __import__("pytest").importorskip("torchvision.ops.misc").FrozenBatchNorm2d(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), frozen).eval()
    fused, report = remove_training_branches(model)
    assert report.changed == [] and fused[1] is frozen
    assert not any("constant" in name for name in [*vars(fused), *fused._buffers])  # fx's leftovers removed
