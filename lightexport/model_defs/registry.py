"""One registry of model builders: name -> builder plus the data every later stage needs.

Exporters need the default input size, calibration and parity need the preprocessing
(mean/std, crop), and checkpoint loading needs the filter that maps other key layouts
onto ours. Keeping all of it beside the builder means a new variant is one entry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from lightexport.errors import UnknownModelError
from lightexport.model_defs.features import FeatureNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: prefixes that name a model of another library instead of a registered one
LIBRARY_PREFIXES = ("timm", "torchvision")
#: The family of every model that comes from a user's own code or module (not the registry).
USER_FAMILY = "user"

StateDict = dict[str, Any]
CheckpointFilter = Callable[[StateDict, "nn.Module | None"], StateDict]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    #: the resize filter of the evaluation transform the checkpoints were validated with
    interpolation: str = "bicubic"
    checkpoint_filter: CheckpointFilter | None = None
    config: dict[str, Any] = field(default_factory=dict)
    #: the classifier's weight (after the checkpoint filter): its rows give a checkpoint's class count
    classifier_weight: str = "head.weight"
    #: classifier-only keys, which a backbone-mode (``fork_feat``) model does not have
    head_prefixes: tuple[str, ...] = ("head.", "avgpool_pre_head.")
    #: other libraries' names for exactly this network (timm's, torchvision's, TF's): they resolve to this
    #: entry. Only where the computation is the same; a same-named variant that differs (BN epsilon,
    #: padding) is not an alias, because its weights would load without error and compute something else.
    aliases: tuple[str, ...] = ()
    #: a feature extractor with no classifier: it always builds in backbone mode (``fork_feat=True``)
    backbone_only: bool = False
    #: builds backbone mode itself (a library's own feature wrapper, ``timm:NAME``); None: the generic
    #: :class:`~lightexport.model_defs.features.FeatureNet` over the family's declared feature maps
    backbone_builder: Callable[..., nn.Module] | None = None
    #: the checkpoint layouts ``--weights`` accepts, as a user would name their source (the README's family table)
    checkpoints: tuple[str, ...] = ()
    #: input channels (a user's model may take other than RGB)
    channels: int = 3
    #: what the input is: "image" (photos preprocessed with mean/std feed calibration and parity) or "none"
    #: (no image semantics: parity feeds seeded noise, int8 needs calibration data of its own)
    preprocess: str = "image"

    def build(self, **kwargs: Any) -> nn.Module:
        """The classifier; with ``fork_feat=True`` backbone mode: the family built without its head
        (``with_head=False``) in :class:`FeatureNet`, which returns the declared feature maps
        (``out_indices`` picks some of them)."""
        kwargs = {**self.config, **kwargs}
        fork_feat = kwargs.pop("fork_feat", self.backbone_only)
        if not fork_feat:
            if self.backbone_only:
                raise ValueError(f"{self.name} is a backbone only (no classifier); build it with fork_feat=True")
            return self.builder(**kwargs)
        if self.backbone_builder is not None:
            return self.backbone_builder(**kwargs)
        out_indices = kwargs.pop("out_indices", None)
        return FeatureNet(self.builder(**kwargs, with_head=False), out_indices)


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}  # alias -> registered name


def register(spec: ModelSpec) -> ModelSpec:
    for name in (spec.name, *spec.aliases):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model name {name!r} registered twice")
    _REGISTRY[spec.name] = spec
    _ALIASES.update(dict.fromkeys(spec.aliases, spec.name))
    return spec


def resolve_name(name: str) -> str:
    """The registered name for ``name``, which may be an alias; unknown names come back unchanged."""
    return _ALIASES.get(name, name)


def families() -> list[str]:
    return list(dict.fromkeys(s.family for s in _REGISTRY.values()))


def list_models(family: str | None = None) -> list[str]:
    """Registered names in registration order; ``family`` matches case-insensitively (``FasterNet`` as the
    README writes it, ``fasternet`` as the registry does), and an unknown family is a usage error."""
    if family is None:
        return list(_REGISTRY)
    def key(name: str) -> str:
        return "".join(c for c in name.lower() if c.isalnum())

    known = {key(f): f for f in families()}
    wanted = known.get(key(family))
    if wanted is None:
        close = difflib.get_close_matches(key(family), list(known), n=1, cutoff=0.5)
        hint = f"; did you mean {known[close[0]]}?" if close else ""
        raise UnknownModelError(f"unknown family {family!r}{hint} (families: {', '.join(families())})")
    return [n for n, s in _REGISTRY.items() if s.family == wanted]


def _normalize(name: str) -> str:
    """Fold the usual typos (case, '-' for '_', letter O for zero) before comparing names."""
    return name.lower().replace("-", "_").replace("o", "0")


def suggest(name: str, n: int = 3) -> list[str]:
    by_key = {_normalize(x): x for x in sorted([*_REGISTRY, *_ALIASES])}
    query = _normalize(name)
    close = difflib.get_close_matches(query, list(by_key), n=n, cutoff=0.5)
    if not close:  # 'fasternet' alone should still point at the family
        close = [k for k in by_key if query in k][:n]
    return list(dict.fromkeys(resolve_name(by_key[k]) for k in close))


def get_spec(name: str) -> ModelSpec:
    """The entry for a registered name or one of its aliases, or for ``timm:NAME`` / ``torchvision:NAME``."""
    if is_library_name(name):
        from lightexport.model_defs.hub import library_spec

        return library_spec(name)
    try:
        return _REGISTRY[resolve_name(name)]
    except KeyError:
        hint = suggest(name)
        msg = f"unknown model {name!r}"
        msg += f"; did you mean {', '.join(hint)}?" if hint else "; run 'lightexport list' to see the registered models"
        raise UnknownModelError(msg) from None


def is_library_name(name: str) -> bool:
    """``timm:NAME`` or ``torchvision:NAME``: a model built by that library (see :mod:`lightexport.model_defs.hub`)."""
    prefix, sep, _ = name.partition(":")
    return bool(sep) and prefix in LIBRARY_PREFIXES


def is_registered(name: str) -> bool:
    """Whether ``name`` names a model (registered, an alias, or library-prefixed) rather than, say, a file."""
    return resolve_name(name) in _REGISTRY or is_library_name(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model in eval mode with random weights (load weights separately)."""
    model = get_spec(name).build(**kwargs)
    return model.eval()
