"""Resolve what the user named: a registered model (optionally with weights) or a bare checkpoint.

A bare checkpoint carries no architecture name, so the architecture is found by fitting
its keys and shapes against every registered model built on the meta device (no memory,
no time): exactly one must fit, otherwise the user is asked to name the model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lightexport.calib.preprocess import Preprocess
from lightexport.calib.samples import sample_photos
from lightexport.errors import CheckpointError, InputFileError
from lightexport.model_defs.checkpoint import compare_keys, load_state_dict_strict, read_checkpoint
from lightexport.model_defs.registry import ModelSpec, StateDict, get_spec, is_registered, list_models

RANDOM_WEIGHTS_SEED = 0
#: Names how random weights are made; artifacts record it, so a reference rebuilt by a lightexport
#: that makes them differently is refused instead of failing parity for no reason of the artifact's.
RANDOM_WEIGHTS_SCHEME = "seed-0, layer-wise BN statistics from the bundled photos, preprocessed as in 0.2"


class FeatureNormWarning(UserWarning):
    """Backbone mode started feature norms a classification checkpoint does not have."""


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: nn.Module
    weights: Path | None = None
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    #: modules the checkpoint did not hold and were freshly initialized (a classification
    #: checkpoint's missing feature norms in backbone mode); recorded in an artifact's provenance
    initialized: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def features(self) -> bool:
        return bool(self.build_kwargs.get("fork_feat"))


def photo_batch(spec: ModelSpec, images: int) -> list[np.ndarray]:
    """The first ``images`` bundled photos, preprocessed as the model expects (as parity's inputs start)."""
    preprocess = Preprocess.from_spec(spec)
    return [preprocess(photo) for photo in sample_photos()[:images]]


@torch.no_grad()
def measure_batchnorm_statistics(module: nn.Module, spec: ModelSpec, images: int = 8) -> None:
    """Give a randomly initialized model the BatchNorm statistics its layers see on real photos.

    Fresh BNs assume every channel has mean 0 and variance 1; with random convs the true
    scales drift layer by layer, so a random MobileNetV2 emits logits of about 1e-8 and a
    random FasterNet-T0 logits that barely depend on the image. Such a model cannot test int8
    (its activations fall through the int8 grid) and says little about fp16.

    One eval-mode pass over the bundled photos: just before each BN runs, its statistics are
    set from the input it is about to normalize (so later layers see exactly what eval
    mode will compute). Each channel is centred on its own mean, but every channel of a
    layer is scaled by the layer's mean variance, as layer-wise data-dependent
    initialization (LSUV) does: dividing each channel by its own deviation would blow up
    channels where the random weights nearly cancel the signal, amplifying whatever noise
    reaches them (int8 rounding) to unit size, a failure trained networks do not have.
    The weights stay random and seeded, so the model is still reproducible.
    """

    def set_statistics(bn: nn.modules.batchnorm._BatchNorm, args: tuple) -> None:
        x = args[0].transpose(0, 1).reshape(bn.num_features, -1)
        bn.running_mean.copy_(x.mean(dim=1))
        bn.running_var.fill_(float(x.var(dim=1).mean()))

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    hooks = [m.register_forward_pre_hook(set_statistics) for m in norms]
    try:
        if norms:
            module.eval()(torch.from_numpy(np.concatenate(photo_batch(spec, images))))
    finally:
        for hook in hooks:
            hook.remove()


def looks_like_path(source: str) -> bool:
    return Path(source).suffix in {".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors"} or "/" in source


def _filtered(spec: ModelSpec, state_dict: StateDict) -> StateDict:
    return spec.checkpoint_filter(state_dict, None) if spec.checkpoint_filter else state_dict


def _head_classes(spec: ModelSpec, state_dict: StateDict) -> int | None:
    weight = state_dict.get(spec.classifier_weight)
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _fits(spec: ModelSpec, state_dict: StateDict, features: bool) -> bool:
    try:
        sd = _filtered(spec, state_dict)
    except CheckpointError:  # the filter knows this layout as another entry's (same tensors, other network)
        return False
    if features:
        kwargs: dict[str, Any] = {"fork_feat": True}
        sd = {k: v for k, v in sd.items() if not k.startswith(spec.head_prefixes)}
    else:
        classes = _head_classes(spec, sd)
        kwargs = {"num_classes": classes} if classes is not None else {}
    try:
        with torch.device("meta"):
            model = spec.build(**kwargs)
    except TypeError:  # a builder without a backbone mode
        return False
    return compare_keys(sd, model).ok


def identify_checkpoint(state_dict: StateDict, path: Path, features: bool = False) -> str:
    """Name the registered model whose parameters a checkpoint fits exactly.

    A backbone checkpoint (a detector's, with the feature norms and no classifier) fits a
    model's backbone mode: it is identified with ``features``, and without it the error says
    to pass ``--features``.
    """
    names = list_models()
    fits = [n for n in names if _fits(get_spec(n), state_dict, features)]
    if len(fits) != 1:
        if not fits and not features:
            backbones = [n for n in names if _fits(get_spec(n), state_dict, True)]
            if backbones:
                raise CheckpointError(f"{path} holds a backbone (it fits {', '.join(backbones)} in backbone mode "
                                      "and has no classifier); pass --features")
        found = f"it fits {', '.join(fits)}" if fits else "it fits no registered model"
        raise CheckpointError(
            f"cannot tell which architecture {path} holds ({found}); name the model and pass --weights"
        )
    return fits[0]


#: Layers a backbone-mode build adds that a classification checkpoint cannot hold and that are
#: safe to start fresh: a new norm starts as the identity (weight 1, bias 0, mean 0, var 1),
#: which is also how the official detection configs start them before fine-tuning.
_FRESH_OK = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _fresh_feature_norms(spec: ModelSpec, skeleton: nn.Module, missing: list[str]) -> tuple[str, ...] | None:
    """The feature-only norm modules ``missing`` keys belong to, or None when something else is missing."""
    with torch.device("meta"):
        classifier_keys = set(spec.build().state_dict())
    modules = dict(skeleton.named_modules())
    owners = sorted({key.rsplit(".", 1)[0] for key in missing})
    if any(k in classifier_keys for k in missing):
        return None
    if not all(isinstance(modules.get(owner), _FRESH_OK) for owner in owners):
        return None
    return tuple(owners)


def load_model(
    source: str,
    weights: str | Path | None = None,
    *,
    num_classes: int | None = None,
    features: bool = False,
    trust: bool = False,
) -> LoadedModel:
    """Build the model ``source`` names (or the one a checkpoint path fits) and load its weights."""
    state_dict = None
    if not is_registered(source) and (looks_like_path(source) or Path(source).is_file()):
        if weights is not None:
            raise InputFileError(f"got a checkpoint ({source}) and --weights; name the model and pass --weights")
        weights = Path(source)
        if not weights.is_file():
            raise InputFileError(f"no such model or file: {source}")
        state_dict = read_checkpoint(weights, trust=trust)
        source = identify_checkpoint(state_dict, weights, features=features)
    spec = get_spec(source)  # also builds specs for timm:NAME / torchvision:NAME (model_defs.hub)
    features = features or spec.backbone_only  # a backbone-only model has no classifier to export
    if weights is not None:
        state_dict = _filtered(spec, state_dict if state_dict is not None else read_checkpoint(weights, trust=trust))
    kwargs: dict[str, Any] = {}
    if features:
        kwargs["fork_feat"] = True
        if state_dict is not None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(spec.head_prefixes)}
    else:
        classes = num_classes if num_classes is not None else (_head_classes(spec, state_dict) if state_dict else None)
        if classes is not None:
            kwargs["num_classes"] = classes
    initialized: tuple[str, ...] = ()
    if state_dict is not None:
        # Fit the checkpoint's shapes against the architecture built on the meta device first:
        # a head of the wrong size (or an absurd class count) is refused before anything is allocated.
        with torch.device("meta"):
            skeleton = spec.build(**kwargs)
        report = compare_keys(state_dict, skeleton)
        if features and report.missing and not (report.unexpected or report.mismatched):
            initialized = _fresh_feature_norms(spec, skeleton, report.missing) or ()
        if not report.ok and not initialized:
            raise CheckpointError(f"{weights} does not fit {spec.name}: {report.describe()}")
    # Without weights, a fixed seed makes the random weights reproducible, so an artifact exported
    # in one process can still be checked against the same reference in another.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        module = spec.build(**kwargs)
    if initialized:
        modules = dict(module.named_modules())
        for owner in initialized:
            fresh = modules[owner]
            fresh.reset_parameters()  # the identity, whatever the builder's own init did
            if isinstance(fresh, nn.modules.batchnorm._BatchNorm):
                fresh.reset_running_stats()
        module.load_state_dict(state_dict, strict=False)
        warnings.warn(f"{Path(weights).name} is a classification checkpoint: the {len(initialized)} feature norms "
                      f"backbone mode adds ({', '.join(initialized)}) start as the identity", FeatureNormWarning,
                      stacklevel=2)
    elif state_dict is not None:
        load_state_dict_strict(module, state_dict, spec.name, weights)
    else:
        measure_batchnorm_statistics(module, spec)
    return LoadedModel(spec=spec, module=module.eval(), weights=Path(weights) if weights else None, build_kwargs=kwargs,
                       initialized=initialized)
