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
from lightexport.errors import CheckpointError, InputFileError, UsageError
from lightexport.model_defs.checkpoint import compare_keys, load_state_dict_strict, read_checkpoint
from lightexport.model_defs.features import output_names as feature_output_names
from lightexport.model_defs.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    USER_FAMILY,
    ModelSpec,
    StateDict,
    get_spec,
    is_registered,
    list_models,
)
from lightexport.usercode import (
    Entry,
    build_from_entry,
    describe_failure,
    flat_outputs,
    load_exported_program,
    parse_entry,
    whole_module,
)

RANDOM_WEIGHTS_SEED = 0
#: Names how random weights are made; artifacts record it, so a reference rebuilt by a lightexport
#: that makes them differently is refused instead of failing parity for no reason of the artifact's.
RANDOM_WEIGHTS_SCHEME = "seed-0, layer-wise BN statistics from the bundled photos, preprocessed as in 0.2"


class FeatureNormWarning(UserWarning):
    """Backbone mode started feature norms a classification checkpoint does not have."""


#: ``--preprocess`` for a user's model: what its input is (mean, std of [0, 1] pixels), or "none" (no image).
PREPROCESS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), "none": None}
#: How a user's model came in (recorded in artifacts): an entry point, a whole-model checkpoint, a .pt2, a module.
USER_SOURCES = ("entry", "checkpoint", "program", "module")


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: nn.Module
    weights: Path | None = None
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    #: modules the checkpoint did not hold and were freshly initialized (a classification
    #: checkpoint's missing feature norms in backbone mode); recorded in an artifact's provenance
    initialized: tuple[str, ...] = ()
    #: a user's model: the entry point it was built from (None for a module, a checkpoint, a .pt2)
    entry: Entry | None = None
    #: a user's model: how it came in (one of USER_SOURCES); None for registered and library models
    user_source: str | None = None
    _outputs: list[str] | None = field(default=None, repr=False, compare=False)
    _decisions: list[int] | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def features(self) -> bool:
        return bool(self.build_kwargs.get("fork_feat"))

    @property
    def user(self) -> bool:
        return self.spec.family == USER_FAMILY

    def output_names(self) -> list[str]:
        """``logits``, backbone mode's ``featN``, or for a user's model its flattened outputs (``out0``, ``out1_0``,
        dict keys), read from one forward pass."""
        if not self.user:
            return feature_output_names(self.module) if self.features else ["logits"]
        self._probe()
        return list(self._outputs)

    def decision_outputs(self) -> list[int] | None:
        """The outputs (by index) that are classification heads, whose top-1 parity judges: for a user's model
        those a Linear layer produces (a detector's pooled features are 2-D too, and decide nothing); None for a
        registered model (its logits)."""
        if not self.user:
            return None
        self._probe()
        return list(self._decisions)

    def _probe(self) -> None:
        if self._outputs is not None:
            return
        heads: set[int] = set()
        hooks = [m.register_forward_hook(lambda _m, _i, out: heads.add(id(out)))
                 for m in self.module.modules() if isinstance(m, nn.Linear)]
        size = self.spec.input_size
        try:
            with torch.inference_mode():
                result = self.module.eval()(torch.zeros(1, self.spec.channels, size, size))
        except Exception as exc:  # noqa: BLE001  # the model's own forward raised: one line, where, and the shape
            path = self.entry.target if self.entry is not None and self.entry.is_file else None
            raise InputFileError(f"{self.name}: its forward pass on a 1x{self.spec.channels}x{size}x{size} input "
                                 f"raised {describe_failure(exc, path)}; check --input-shape") from exc
        finally:
            for hook in hooks:
                hook.remove()
        pairs = flat_outputs(result)
        self._outputs = [name for name, _ in pairs]
        self._decisions = [i for i, (_, tensor) in enumerate(pairs) if id(tensor) in heads]


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


def user_spec(name: str, module: nn.Module, input_shape: tuple[int, ...] | None = None,
              preprocess: str | None = None) -> ModelSpec:
    """A spec for a model the registry does not know: its input from ``input_shape`` or the module's own
    ``input_shape`` attribute, its preprocessing from ``preprocess`` or its ``preprocess`` attribute."""
    shape = input_shape if input_shape is not None else getattr(module, "input_shape", None)
    if shape is None:
        raise UsageError(f"{name}: give the input shape (--input-shape 1x3x640x640, input_shape=(1, 3, 640, 640)) "
                         "or set an input_shape attribute on the module")
    shape = check_input_shape(shape)
    kind = preprocess if preprocess is not None else getattr(module, "preprocess", "imagenet")
    if kind not in PREPROCESS:
        raise UsageError(f"preprocess {kind!r} is not one of {', '.join(PREPROCESS)}")
    mean, std = PREPROCESS[kind] or ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return ModelSpec(name=name, family=USER_FAMILY, builder=lambda **_: module, input_size=shape[2], mean=mean,
                     std=std, crop_pct=1.0, interpolation="bilinear", classifier_weight="", head_prefixes=(),
                     channels=shape[1], preprocess="none" if kind == "none" else "image",
                     config={"batch": shape[0], "preprocess": kind})


def check_input_shape(shape: Any) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` (or ``(C, H, W)``: batch 1) with every dimension in range and H = W."""
    from lightexport.options import check_int

    if isinstance(shape, str):
        try:
            shape = tuple(int(d) for d in shape.lower().replace(",", "x").split("x"))
        except ValueError:
            raise UsageError(f"an input shape is written NxCxHxW (1x3x640x640), got {shape!r}") from None
    if not isinstance(shape, (tuple, list)) or len(shape) not in (3, 4) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise UsageError(f"an input shape is (N, C, H, W) of integers, got {shape!r}")
    shape = (1, *shape) if len(shape) == 3 else tuple(shape)
    batch, channels, height, width = shape
    check_int("batch", batch, "the input shape's batch")
    if not 1 <= channels <= 64:
        raise UsageError(f"the input shape's channels must be from 1 to 64, got {channels}")
    check_int("input_size", height, "the input shape's height")
    if height != width:
        raise UsageError(f"input shape {'x'.join(map(str, shape))}: only square inputs (H = W) are exported; "
                         "pad or resize to a square side")
    return batch, channels, height, width


def from_module(module: nn.Module, *, name: str | None = None, input_shape: tuple[int, ...] | None = None,
                preprocess: str | None = None, weights: Path | None = None, entry: Entry | None = None,
                source: str = "module") -> LoadedModel:
    """A user's ``nn.Module`` as a loaded model (the Python door: ``api.export(module, "onnx", input_shape=...)``)."""
    if not isinstance(module, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(module).__name__}")
    name = name or (entry.name if entry else type(module).__name__.lower())
    spec = user_spec(name, module, input_shape, preprocess)
    module = module.eval()
    if weights is None and spec.preprocess == "image" and spec.channels == 3 and source == "entry":
        measure_batchnorm_statistics(module, spec)  # random weights as for registered models (see the function)
    return LoadedModel(spec=spec, module=module, weights=Path(weights) if weights else None, entry=entry,
                       user_source=source)


def _load_user(source: str, weights: str | Path | None, trust: bool, model_args: dict | None,
               input_shape: tuple[int, ...] | None, preprocess: str | None) -> LoadedModel | None:
    """A model from user code (``file.py:factory``, ``pkg.mod:factory``), a ``.pt2`` program, or a trusted whole-model
    checkpoint; None when ``source`` is none of these (a registered name, a state dict)."""
    entry = parse_entry(source, model_args)
    if entry is not None:
        module = build_from_entry(entry)
        if weights is not None:
            state_dict = read_checkpoint(weights, trust=trust)
            load_state_dict_strict(module, state_dict, entry.spelled, weights)
        return from_module(module, input_shape=input_shape, preprocess=preprocess, weights=weights, entry=entry,
                           source="entry")
    if model_args:
        raise UsageError("--model-arg applies to a model from code (file.py:factory or package.module:factory)")
    path = Path(source)
    if path.suffix == ".pt2":
        if not path.is_file():
            raise InputFileError(f"no such file: {source}")
        module = load_exported_program(path)
        return from_module(module, name=path.stem, input_shape=input_shape, preprocess=preprocess, weights=path,
                           source="program")
    if trust and weights is None and path.is_file() and not is_registered(source):
        obj = _trusted_load(path)
        module = whole_module(obj, source)
        if module is not None:
            return from_module(module, name=path.stem, input_shape=input_shape, preprocess=preprocess, weights=path,
                               source="checkpoint")
    return None


def _trusted_load(path: Path) -> Any:
    from lightexport.model_defs.checkpoint import _sniff_format  # the same refusal of non-checkpoints

    _sniff_format(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001  # a trusted pickle can fail in many ways (a class it names is missing)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load it even with --trust-checkpoint: {reason}") from exc


def load_model(
    source: str,
    weights: str | Path | None = None,
    *,
    num_classes: int | None = None,
    features: bool = False,
    trust: bool = False,
    model_args: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | str | None = None,
    preprocess: str | None = None,
) -> LoadedModel:
    """Build the model ``source`` names (or the one a checkpoint path fits) and load its weights.

    ``source`` is a registered name (or ``timm:``/``torchvision:NAME``), a checkpoint file, a user's
    entry point (``file.py:factory``, ``package.module:factory``, with ``model_args``), a ``.pt2``
    program, or with ``trust`` a whole-model checkpoint; ``input_shape`` and ``preprocess`` describe
    a user's model's input where its module does not.
    """
    user = _load_user(source, weights, trust, model_args, input_shape, preprocess)
    if user is not None:
        return user
    if input_shape is not None or preprocess is not None:
        raise UsageError("--input-shape and --preprocess describe a model from your code (file.py:factory); a "
                         "registered model takes --input-size and --batch")
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
