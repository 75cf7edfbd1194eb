"""Backbone mode for every family from one declaration: where the feature maps are, not code that fetches them.

A detector reads a backbone's intermediate maps (strides 4-32), not its logits. Rather than each
family carrying a second forward for that, each declares it as data on the model it builds, as
timm's ``feature_info`` does:

- ``feature_trunk``: the steps its forward runs before the head, in order. A step is a module
  path (``"blocks"``) or, where the forward does more than call a module (EfficientNet-Lite's
  TF-"SAME" padded stem), a plain function ``(net, x) -> x`` that reads the modules it needs
  from ``net`` by name.
- ``feature_info``: one :class:`FeatureInfo` per feature map, in trunk order.

:class:`FeatureNet` turns any such model into the multi-output backbone. It takes over the
model's modules under their own names, so a backbone checkpoint's keys, the module paths in
exported node names and what the reparam passes see are the family's own; it runs the trunk only
up to the last feature map asked for and never builds or runs a classifier. Families are built
without their head for it (``with_head=False``); :meth:`ModelSpec.build` does both when
``fork_feat=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

#: a trunk step: a module path, or a function of (the module holding the family's modules, input)
Step = str | Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FeatureInfo:
    """Where one feature map comes from and what it is.

    ``module`` is a trunk step or a child of one (``"features.6"`` inside the ``"features"``
    step), whose output is the map; ``post`` names a module applied to the map alone while the
    trunk continues from the raw output (FasterNet's feature norms; Xception's ReLU, which its
    next block also applies first).
    """

    module: str
    channels: int
    reduction: int  # input size / map size: the output stride
    post: str | None = None


def pyramid_indices(strides: Sequence[int], levels: tuple[int, ...] = (4, 8, 16, 32)) -> list[int]:
    """Indices of the last layer at each output stride in ``levels``, given each layer's cumulative stride.

    Backbone mode returns one feature map per level; the last layer before the
    resolution drops again carries the most processed features at that stride.
    """
    return [max(i for i, s in enumerate(strides) if s == level) for level in levels]


def pyramid_features(prefix: str, strides: Sequence[int], channels: Sequence[int],
                     levels: tuple[int, ...] = (4, 8, 16, 32)) -> list[FeatureInfo]:
    """The feature points of a ``prefix`` Sequential whose layer i has cumulative stride and width ``strides[i]``,
    ``channels[i]``: its last layer at each of ``levels``."""
    return [FeatureInfo(f"{prefix}.{i}", channels[i], strides[i]) for i in pyramid_indices(strides, levels)]


def _expand(trunk: Iterable[Step], modules: dict[str, nn.Module], targets: set[str]) -> list[Step]:
    """The trunk with every Sequential step that holds a feature point replaced by its children, recursively."""
    steps: list[Step] = []
    for step in trunk:
        if isinstance(step, str) and any(t.startswith(step + ".") for t in targets):
            module = modules.get(step)
            if not isinstance(module, nn.Sequential):
                raise ValueError(f"feature point inside trunk step {step!r}, which is not an nn.Sequential")
            steps += _expand((f"{step}.{name}" for name, _ in module.named_children()), modules, targets)
        else:
            steps.append(step)
    return steps


class FeatureNet(nn.Module):
    """The backbone of a model that declares ``feature_trunk`` and ``feature_info``: the maps at ``out_indices``.

    The model's parameters, buffers and child modules become this module's under the same names
    (the model object itself is not kept). Steps are looked up by path on every call, so a pass
    that replaces a submodule (BatchNorm fusion) is seen by the next forward.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        declared: tuple[FeatureInfo, ...] = tuple(model.feature_info)
        indices = list(range(len(declared)) if out_indices is None else out_indices)
        if not indices or sorted(set(indices)) != indices or not all(0 <= i < len(declared) for i in indices):
            raise ValueError(f"out_indices must be increasing indices into the {len(declared)} declared feature "
                             f"maps of {type(model).__name__}, got {list(out_indices or [])}")
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in model.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in model._non_persistent_buffers_set)
        for name, child in model.named_children():
            self.add_module(name, child)
        self.out_indices = indices
        self.feature_info = [declared[i] for i in indices]
        modules = dict(self.named_modules())
        for info in self.feature_info:
            missing = [p for p in (info.module, info.post) if p is not None and p not in modules]
            if missing:
                raise ValueError(f"{type(model).__name__} declares a feature map at {missing[0]!r}, which it has no "
                                 "module for")
        # The steps up to the last requested map, each with the posts of the maps taken after it (None: as it is).
        steps = _expand(model.feature_trunk, modules, {info.module for info in self.feature_info})
        positions = []
        for info in self.feature_info:
            if info.module not in steps:
                raise ValueError(f"{type(model).__name__}: feature point {info.module!r} is not a trunk step")
            positions.append(steps.index(info.module))
        if positions != sorted(positions):
            raise ValueError(f"{type(model).__name__}: feature_info is not in trunk order")
        posts: dict[int, list[str | None]] = {}
        for position, info in zip(positions, self.feature_info):
            posts.setdefault(position, []).append(info.post)
        self._plan: list[tuple[Step, list[str | None]]] = [
            (step, posts.get(i, [])) for i, step in enumerate(steps[: positions[-1] + 1])
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for step, posts in self._plan:
            x = self.get_submodule(step)(x) if isinstance(step, str) else step(self, x)
            for post in posts:
                feats.append(x if post is None else self.get_submodule(post)(x))
        return feats

    def extra_repr(self) -> str:
        return "outputs=" + ", ".join(f"{f.module}{'+' + f.post if f.post else ''} ({f.channels}ch /{f.reduction})"
                                      for f in self.feature_info)


def feature_outputs(module: nn.Module) -> tuple[FeatureInfo, ...]:
    """What a backbone-mode module returns, one :class:`FeatureInfo` per output in order.

    A :class:`FeatureNet` declares it; timm's own ``features_only`` wrappers (``timm:NAME``
    models) carry timm's ``FeatureInfo``, read through its public ``get_dicts``.
    """
    info: Any = getattr(module, "feature_info", None)
    if isinstance(module, FeatureNet):
        return tuple(info)
    if callable(getattr(info, "get_dicts", None)):
        return tuple(FeatureInfo(d["module"], int(d["num_chs"]), int(d["reduction"])) for d in info.get_dicts())
    raise TypeError(f"{type(module).__name__} is not a backbone-mode module (build it with fork_feat=True)")


def output_names(module: nn.Module) -> list[str]:
    """The graph output names of a backbone-mode module: ``feat0``, ``feat1``, ... one per declared map."""
    return [f"feat{i}" for i in range(len(feature_outputs(module)))]
