"""Any timm or torchvision classifier by name: ``timm:NAME`` and ``torchvision:NAME`` become a ModelSpec on the fly.

Each library already knows how its models were evaluated, so the spec takes the input size
and preprocessing from there instead of guessing: timm's ``pretrained_cfg`` (input size, mean,
std, crop_pct, interpolation; a ``NAME.TAG`` picks that tag's config), torchvision's default
weights' ``transforms`` (crop and resize size, mean, std, interpolation), read from the
transform object, which is built without fetching the weights. Models are always built with
``pretrained=False`` / ``weights=None``: nothing is downloaded; ``--weights`` loads that
library's own state dict as it is.

The spec's family records the library and its version, which artifacts carry: random weights
are that library's initialization under a fixed seed, so another version may make others.
"""

from __future__ import annotations

import difflib
import importlib
import math
from functools import cache, partial
from typing import Any

import torch
import torch.nn as nn

from lightexport.errors import BackendUnavailableError, UnknownModelError, UsageError
from lightexport.model_defs.registry import LIBRARY_PREFIXES, ModelSpec


def split_name(name: str) -> tuple[str, str]:
    library, _, model = name.partition(":")
    if library not in LIBRARY_PREFIXES or not model:
        raise UsageError(f"{name!r}: expected {' or '.join(p + ':NAME' for p in LIBRARY_PREFIXES)}")
    return library, model


def _import(library: str) -> Any:
    try:
        return importlib.import_module(library)
    except ImportError:
        msg = f"{library} is not installed; pip install {library} to use {library}:NAME models"
        raise BackendUnavailableError(msg) from None


def _unknown(library: str, model: str, known: list[str]) -> UnknownModelError:
    close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(f'{library}:{c}' for c in close)}?" if close else ""
    return UnknownModelError(f"{library} has no model {model!r}{hint}")


@cache
def library_spec(name: str) -> ModelSpec:
    """The spec for ``timm:NAME`` or ``torchvision:NAME`` (cached: building it reads the library's registry)."""
    library, model = split_name(name)
    return _timm_spec(name, model) if library == "timm" else _torchvision_spec(name, model)


# -- timm ------------------------------------------------------------------------------------------------------


def _timm_spec(name: str, model: str) -> ModelSpec:
    timm = _import("timm")
    from timm.models import get_pretrained_cfg, is_model, split_model_name_tag

    arch, _tag = split_model_name_tag(model)
    if not is_model(arch):
        raise _unknown("timm", model, timm.list_models())
    cfg = get_pretrained_cfg(model)
    if cfg is None and _tag:
        raise UnknownModelError(f"timm's {arch} has no pretrained config tagged {_tag!r}")
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    size = cfg_dict.get("input_size", (3, 224, 224))
    classifier = cfg_dict.get("classifier") or "fc"
    if isinstance(classifier, (list, tuple)):  # distilled models name two heads; the first is the class head
        classifier = classifier[0]
    builder = _TimmBuilder(model)
    return ModelSpec(
        name=name, family=f"timm {timm.__version__}", builder=builder, backbone_builder=builder.features,
        input_size=int(size[-1]),
        mean=tuple(cfg_dict.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg_dict.get("std", (0.229, 0.224, 0.225))),
        crop_pct=float(cfg_dict.get("crop_pct", 0.875)), interpolation=_interpolation(cfg_dict.get("interpolation")),
        classifier_weight=f"{classifier}.weight", head_prefixes=(f"{classifier}.",), checkpoints=(f"timm {arch}",),
    )


class _TimmBuilder:
    """``timm.create_model(NAME, pretrained=False)``; backbone mode is timm's own ``features_only`` wrapper,
    built from timm's ``feature_info`` as ours is from our families' (its outputs: ``features.feature_outputs``)."""

    def __init__(self, model: str) -> None:
        self.model = model

    def __call__(self, num_classes: int | None = None) -> nn.Module:
        import timm

        kwargs: dict[str, Any] = {"pretrained": False}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return timm.create_model(self.model, **kwargs)

    def features(self, out_indices: tuple[int, ...] | None = None) -> nn.Module:
        import timm

        kwargs: dict[str, Any] = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
        return timm.create_model(self.model, pretrained=False, features_only=True, **kwargs)


# -- torchvision -----------------------------------------------------------------------------------------------


def _torchvision_spec(name: str, model: str) -> ModelSpec:
    torchvision = _import("torchvision")
    from torchvision.models import get_model_builder, get_model_weights, list_models

    classifiers = list_models(module=torchvision.models)  # detection/segmentation/video output dicts, not logits
    if model not in classifiers:
        raise _unknown("torchvision", model, classifiers)
    transform = get_model_weights(model).DEFAULT.transforms()  # a transform object; no weights are fetched
    crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
    try:  # the classifier is the last Linear; on the meta device building costs nothing...
        with torch.device("meta"):
            built = get_model_builder(model)(weights=None)
    except NotImplementedError:  # ...unless the builder computes its widths with tensors (RegNet)
        built = get_model_builder(model)(weights=None)
    # the last Linear; SqueezeNet classifies with a 1x1 convolution, the last one
    heads = [n for n, m in built.named_modules() if isinstance(m, nn.Linear)] or [
        n for n, m in built.named_modules() if isinstance(m, nn.Conv2d)]
    if not heads:
        raise UsageError(f"torchvision:{model} has no Linear or convolution layer to classify with")
    head = heads[-1]
    return ModelSpec(
        name=name, family=f"torchvision {torchvision.__version__}", builder=_TorchvisionBuilder(model),
        backbone_builder=partial(_no_backbone, model),
        input_size=crop, mean=tuple(transform.mean), std=tuple(transform.std), crop_pct=_crop_pct(crop, resize),
        interpolation=_interpolation(transform.interpolation.value), classifier_weight=f"{head}.weight",
        head_prefixes=(f"{head}.",), checkpoints=(f"torchvision {model}",),
    )


def _no_backbone(model: str, **kwargs: Any) -> nn.Module:
    raise UsageError(f"torchvision:{model} has no backbone mode here; use --features with a timm: or a "
                     "registered model")


class _TorchvisionBuilder:
    """``torchvision.models.get_model(NAME, weights=None)``: a classifier; torchvision has no feature mode."""

    def __init__(self, model: str) -> None:
        self.model = model

    def __call__(self, num_classes: int | None = None) -> nn.Module:
        from torchvision.models import get_model

        kwargs: dict[str, Any] = {"weights": None}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if self.model in ("googlenet", "inception_v3"):  # their aux heads only run in training
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        return get_model(self.model, **kwargs)


def _crop_pct(crop: int, resize: int) -> float:
    """crop / resize, nudged down until the resize our preprocessing derives (floor(crop / pct)) is ``resize``."""
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    return pct


def _interpolation(value: str | None) -> str:
    return value if value in ("bilinear", "bicubic", "nearest") else "bicubic"
