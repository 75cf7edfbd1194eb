"""MobileNetV3 Large and Small (Howard et al., ICCV 2019) with torchvision's parameter names.

Inverted residuals as in MobileNetV2, some with squeeze-excitation (hard-sigmoid gate) and
hard-swish activations, in the NAS-found layouts of the paper's Tables 1 and 2. The module
tree follows torchvision (``features.N.block``, ``classifier.0/3``), whose ImageNet
checkpoints are the ones PyTorch users hold, so they load without remapping.

timm's ``mobilenetv3_large_100`` / ``mobilenetv3_small_100`` are the same blocks, widths, SE
widths (``make_divisible(expanded / 4)``), gates and symmetric padding; timm's ``conv_head`` (a
1x1 conv with bias on the pooled map) is torchvision's first classifier ``Linear``. They differ
in one number: BatchNorm epsilon 1e-5 where torchvision has 1e-3. Since a checkpoint does not
record its epsilon, the two are registered as separate networks (``bn_eps``), each accepting
only its own library's key layout: timm's weights read with eps 1e-3 load without error and
compute something else (relative error ~1e-3 per BN, compounding over 50 of them).

timm's ``tf_mobilenetv3_large_100`` / ``tf_mobilenetv3_small_100`` (ports of Google's TF
checkpoints) hold the very keys of ``mobilenetv3_*_100`` but are a third network: eps 1e-3 and
TF "SAME" padding (``same_padding``: a stride-2 conv pads one pixel more at the bottom/right on
even sides). They are registered too, so that a bare file in timm's layout is reported as
ambiguous (name the model) instead of being loaded into whichever network came first.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.checkpoint import accept_library_layout
from lightexport.model_defs.layers import ConvBNAct, FeaturesNet, SameConvBNAct, SqueezeExcitation, make_divisible
from lightexport.model_defs.registry import ModelSpec, StateDict, register

# Per block: kernel, expanded width, output width, squeeze-excitation, activation (RE/HS), stride.
LARGE = (
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
)  # fmt: skip
SMALL = (
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
)  # fmt: skip
ACTIVATIONS = {"RE": partial(nn.ReLU, inplace=True), "HS": partial(nn.Hardswish, inplace=True)}
BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
TORCHVISION_BN_EPS, TIMM_BN_EPS = 1e-3, 1e-5


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "HS",
                eps: float = TORCHVISION_BN_EPS, same_padding: bool = False):
    layer = SameConvBNAct if same_padding and stride > 1 else ConvBNAct  # stride-1 "SAME" is symmetric
    return layer(cin, cout, kernel, stride, groups, norm=partial(BatchNorm, eps=eps),
                 act=ACTIVATIONS[act] if act else None)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int,
                 eps: float = TORCHVISION_BN_EPS, same_padding: bool = False) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [conv_bn_act(cin, expanded, 1, act=act, eps=eps)] if expanded != cin else []
        layers.append(conv_bn_act(expanded, expanded, kernel, stride, groups=expanded, act=act, eps=eps,
                                  same_padding=same_padding))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4), gate=nn.Hardsigmoid))
        layers.append(conv_bn_act(expanded, cout, 1, act=None, eps=eps))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(FeaturesNet):
    """MobileNetV3 classifier; ``with_head=False`` builds the trunk for backbone mode (no head)."""

    def __init__(self, layout: str = "large", num_classes: int = 1000, dropout: float = 0.2,
                 with_head: bool = True, in_chans: int = 3, bn_eps: float = TORCHVISION_BN_EPS,
                 same_padding: bool = False) -> None:
        blocks, head_width = {"large": (LARGE, 1280), "small": (SMALL, 1024)}[layout]
        cin = 16
        layers: list[nn.Module] = [conv_bn_act(in_chans, cin, 3, 2, eps=bn_eps, same_padding=same_padding)]
        strides, channels = [2], [cin]
        for kernel, expanded, cout, se, act, stride in blocks:
            layers.append(InvertedResidual(cin, kernel, expanded, cout, se, act, stride, bn_eps, same_padding))
            strides.append(strides[-1] * stride)
            channels.append(cout)
            cin = cout
        head = (
            conv_bn_act(cin, 6 * cin, 1, eps=bn_eps),
            nn.Sequential(nn.Linear(6 * cin, head_width), nn.Hardswish(inplace=True), nn.Dropout(dropout),
                          nn.Linear(head_width, num_classes)),
        ) if with_head else None
        super().__init__(layers, strides, channels, head)


# timm's names per module of a block, as (index in torchvision's ``block`` Sequential, name inside it); the
# first block of timm's layout is a depthwise-separable one ({conv_dw, bn1, se, conv_pw, bn2}), the others
# inverted residuals. Without squeeze-excitation the projection moves up one place.
_TIMM_DS = {"conv_dw": (0, "0"), "bn1": (0, "1"), "se": (1, ""), "conv_pw": (2, "0"), "bn2": (2, "1")}
_TIMM_IR = {"conv_pw": (0, "0"), "bn1": (0, "1"), "conv_dw": (1, "0"), "bn2": (1, "1"), "se": (2, ""),
            "conv_pwl": (3, "0"), "bn3": (3, "1")}
_TIMM_SE = {"conv_reduce": "fc1", "conv_expand": "fc2"}
_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)$")


def _timm_to_torchvision(state_dict: StateDict) -> StateDict:
    """timm's ``conv_stem/bn1/blocks.S.B.*/conv_head/classifier`` -> torchvision's ``features.N/classifier.0,3``."""
    blocks = sorted({(int(m[1]), int(m[2])) for k in state_dict if (m := _TIMM_BLOCK_KEY.match(k))})
    head_stage = {int(m[1]) for k in state_dict if (m := _TIMM_BLOCK_KEY.match(k)) and m[3] == "conv"}
    inverted = [b for b in blocks if b[0] not in head_stage]  # the last stage is the 1x1 conv before pooling
    flat = {position: i + 1 for i, position in enumerate(inverted)}  # features.0 is the stem
    with_se = {(int(m[1]), int(m[2])) for k in state_dict if (m := _TIMM_BLOCK_KEY.match(k)) and m[3] == "se"}
    top = {"conv_stem": "features.0.0", "bn1": "features.0.1", "classifier": "classifier.3"}
    out: StateDict = {}
    for key, value in state_dict.items():
        if m := _TIMM_BLOCK_KEY.match(key):
            position, module, rest = (int(m[1]), int(m[2])), m[3], m[4]
            if position in flat:
                table = _TIMM_IR if f"blocks.{m[1]}.{m[2]}.conv_pwl.weight" in state_dict else _TIMM_DS
                if module in table:
                    index, inner = table[module]
                    index -= index > table["se"][0] and position not in with_se
                    if module == "se":
                        name, _, param = rest.partition(".")
                        rest = f"{_TIMM_SE.get(name, name)}.{param}"
                    key = f"features.{flat[position]}.block.{index}.{inner + '.' if inner else ''}{rest}"
            elif module in ("conv", "bn1"):
                key = f"features.{len(flat) + 1}.{'0' if module == 'conv' else '1'}.{rest}"
        elif key.startswith("conv_head."):  # a 1x1 conv on the pooled 1x1 map: the first Linear
            key, value = key.replace("conv_head", "classifier.0"), value.flatten(1) if value.ndim == 4 else value
        else:
            module, _, param = key.partition(".")
            key = f"{top[module]}.{param}" if module in top else key
        out[key] = value  # a key no rule covers stays as is: the strict load names it
    return out


def checkpoint_filter(state_dict: StateDict, model: nn.Module | None = None, *, layout: str = "large",
                      timm: bool = False) -> StateDict:
    """Accept the layout of the library whose network this entry is; refuse the other's, naming the right entry.

    Refusing matters because the layouts hold the same tensors: only the key names tell which
    BatchNorm epsilon and padding the weights were trained with. (timm's layout alone cannot tell
    ``mobilenetv3_*_100`` from ``tf_mobilenetv3_*_100``: both entries accept it.)
    """
    return accept_library_layout(
        state_dict, timm=timm, from_timm=_timm_to_torchvision,
        refuse_torchvision=f"the checkpoint holds torchvision's MobileNetV3 layout (BatchNorm eps 1e-3, symmetric "
                           f"padding), which is not timm's network; load it as mobilenet_v3_{layout}",
        refuse_timm=f"the checkpoint holds timm's MobileNetV3 layout, not torchvision's network; load it as "
                    f"mobilenetv3_{layout}_100 (BatchNorm eps 1e-5) or tf_mobilenetv3_{layout}_100 (TF's port: eps "
                    "1e-3, 'SAME' padding)")


for _layout in ("large", "small"):
    _head = (f"features.{len(LARGE if _layout == 'large' else SMALL) + 1}.", "classifier.")
    register(ModelSpec(name=f"mobilenet_v3_{_layout}", family="mobilenetv3", builder=MobileNetV3, input_size=224,
                       crop_pct=0.875, interpolation="bilinear", config=dict(layout=_layout),
                       checkpoint_filter=partial(checkpoint_filter, layout=_layout),
                       classifier_weight="classifier.3.weight", head_prefixes=_head, checkpoints=("torchvision",)))
    # timm's namesake: the same module tree under torchvision's names, BatchNorm eps 1e-5 (see the module docstring)
    register(ModelSpec(name=f"mobilenetv3_{_layout}_100", family="mobilenetv3", builder=MobileNetV3, input_size=224,
                       crop_pct=0.875, interpolation="bicubic", config=dict(layout=_layout, bn_eps=TIMM_BN_EPS),
                       checkpoint_filter=partial(checkpoint_filter, layout=_layout, timm=True),
                       classifier_weight="classifier.3.weight", head_prefixes=_head,
                       checkpoints=(f"timm mobilenetv3_{_layout}_100",)))
    # timm's port of the TF checkpoints: timm's keys, TF's eps 1e-3 and "SAME" padding, Inception mean/std
    register(ModelSpec(name=f"tf_mobilenetv3_{_layout}_100", family="mobilenetv3", builder=MobileNetV3,
                       input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875,
                       interpolation="bilinear", config=dict(layout=_layout, same_padding=True),
                       checkpoint_filter=partial(checkpoint_filter, layout=_layout, timm=True),
                       classifier_weight="classifier.3.weight", head_prefixes=_head,
                       checkpoints=(f"timm tf_mobilenetv3_{_layout}_100",)))
