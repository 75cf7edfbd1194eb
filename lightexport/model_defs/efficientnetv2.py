"""EfficientNetV2 S, M, L (Tan & Le, ICML 2021) with torchvision's parameter names.

Early stages use Fused-MBConv (one full k x k conv in place of expand + depthwise), later
ones MBConv with squeeze-excitation sized from the block's input width; SiLU throughout,
BatchNorm eps 1e-3, stochastic depth on residual branches (training only). The module
tree follows torchvision (``features.N.M.block``), whose ImageNet checkpoints load as they are.

timm's ``tf_efficientnetv2_s/m/l`` (the ports of Google's released checkpoints, in1k and in21k)
are the same blocks, widths, SE widths and BatchNorm epsilon, but were trained with TF's "SAME"
padding: the stride-2 3x3 convs (stem, first block of stages 1, 2, 3 and 5 in S) pad one pixel at
the bottom/right only when the input side is even, where torchvision pads one on every side.
Same tensors, another network: they are registered under timm's names (``same_padding=True``),
load timm's key layout through :func:`checkpoint_filter`, and refuse torchvision's layout (and
the torchvision entries timm's), so a bare checkpoint is identified by its layout.
timm's own ``efficientnetv2_s/m/l`` (BatchNorm eps 1e-5, symmetric padding; timm releases no
weights for them) hold the very keys of ``tf_efficientnetv2_*``: registered too (``bn_eps``), so a
bare file in timm's layout is refused as ambiguous rather than loaded into a guess.
``efficientnetv2_rw_*`` are other networks (an expanding first stage, 272/1792 widths in ``rw_s``).
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn

from lightexport.model_defs.checkpoint import accept_library_layout
from lightexport.model_defs.layers import ConvBNAct, DropPath, FeaturesNet, SameConvBNAct, SqueezeExcitation
from lightexport.model_defs.registry import ModelSpec, StateDict, register

# Per stage: fused?, expansion, kernel, stride, input width, output width, blocks.
STAGES = {
    "s": ((True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
          (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9), (False, 6, 3, 2, 160, 256, 15)),
    "m": ((True, 1, 3, 1, 24, 24, 3), (True, 4, 3, 2, 24, 48, 5), (True, 4, 3, 2, 48, 80, 5),
          (False, 4, 3, 2, 80, 160, 7), (False, 6, 3, 1, 160, 176, 14), (False, 6, 3, 2, 176, 304, 18),
          (False, 6, 3, 1, 304, 512, 5)),
    "l": ((True, 1, 3, 1, 32, 32, 4), (True, 4, 3, 2, 32, 64, 7), (True, 4, 3, 2, 64, 96, 7),
          (False, 4, 3, 2, 96, 192, 10), (False, 6, 3, 1, 192, 224, 19), (False, 6, 3, 2, 224, 384, 25),
          (False, 6, 3, 1, 384, 640, 7)),
}  # fmt: skip
VARIANTS = {"s": dict(input_size=384, dropout=0.2), "m": dict(input_size=480, dropout=0.3),
            "l": dict(input_size=480, dropout=0.4)}
TIMM_TEST_SIZE = {"s": 384, "m": 416, "l": 480}  # timm's efficientnetv2_* (its tf_* ports use VARIANTS' sizes)
HEAD_WIDTH = 1280
BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)
SiLU = partial(nn.SiLU, inplace=True)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True,
            same_padding: bool = False, eps: float = 1e-3) -> ConvBNAct:
    """conv + BN (+ SiLU); with ``same_padding`` a strided one pads as TF (stride-1 "SAME" is symmetric)."""
    layer = SameConvBNAct if same_padding and stride > 1 else ConvBNAct
    return layer(cin, cout, kernel, stride, groups, norm=partial(BatchNorm, eps=eps), act=SiLU if act else None)


class MBConv(nn.Module):
    """(Fused-)MBConv: ``x + drop_path(block(x))`` when the shape is kept, else ``block(x)``."""

    def __init__(self, fused: bool, expansion: int, kernel: int, stride: int, cin: int, cout: int,
                 drop_path: float, same_padding: bool = False, eps: float = 1e-3) -> None:
        super().__init__()
        cbn = partial(conv_bn, same_padding=same_padding, eps=eps)
        expanded = cin * expansion
        self.use_res_connect = stride == 1 and cin == cout
        if fused:
            layers = ([cbn(cin, expanded, kernel, stride), cbn(expanded, cout, 1, act=False)]
                      if expanded != cin else [cbn(cin, cout, kernel, stride)])
        else:
            layers = [cbn(cin, expanded, 1)] if expanded != cin else []
            layers += [cbn(expanded, expanded, kernel, stride, groups=expanded),
                       SqueezeExcitation(expanded, max(1, cin // 4), act=SiLU),
                       cbn(expanded, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.block(x)) if self.use_res_connect else self.block(x)


class EfficientNetV2(FeaturesNet):
    """EfficientNetV2 classifier; ``with_head=False`` builds the trunk for backbone mode (no head)."""

    def __init__(self, variant: str = "s", num_classes: int = 1000, dropout: float = 0.2,
                 stochastic_depth_prob: float = 0.2, with_head: bool = True, in_chans: int = 3,
                 same_padding: bool = False, bn_eps: float = 1e-3) -> None:
        stages = STAGES[variant]
        layers: list[nn.Module] = [conv_bn(in_chans, stages[0][4], 3, 2, same_padding=same_padding, eps=bn_eps)]
        strides, channels = [2], [stages[0][4]]
        total, index = sum(stage[-1] for stage in stages), 0
        for fused, expansion, kernel, stride, cin, cout, blocks in stages:
            stage = []
            for b in range(blocks):  # drop-path rate grows linearly with depth over the whole network
                stage.append(MBConv(fused, expansion, kernel, stride if b == 0 else 1, cin if b == 0 else cout,
                                    cout, stochastic_depth_prob * index / total, same_padding, bn_eps))
                index += 1
            layers.append(nn.Sequential(*stage))
            strides.append(strides[-1] * stride)
            channels.append(cout)
        head = (conv_bn(stages[-1][5], HEAD_WIDTH, 1, eps=bn_eps),
                nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_WIDTH, num_classes))) if with_head else None
        super().__init__(layers, strides, channels, head)


# timm's names (EfficientNet builder) per module of a block -> (index in torchvision's ``block``, name inside it):
# the expansion-1 first stage is one conv (``ConvBnAct``), the fused stages {conv_exp, conv_pwl} (``EdgeResidual``),
# the rest inverted residuals with squeeze-excitation.
_TIMM_BLOCK = {"conv": "0.0", "conv_exp": "0.0", "conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1",
               "se": "2", "conv_pwl": "3.0", "bn3": "3.1"}
_TIMM_SE = {"conv_reduce": "fc1", "conv_expand": "fc2"}
_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(.+)$")


def _timm_to_torchvision(state_dict: StateDict, stages: int) -> StateDict:
    """timm's ``conv_stem/bn1/blocks.S.B.*/conv_head/bn2/classifier`` -> ``features.N[.M.block.I]/classifier.1``."""
    fused = {m[1] for k in state_dict if (m := _TIMM_BLOCK_KEY.match(k)) and m[3] == "conv_exp"}
    top = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": f"features.{stages + 1}.0",
           "bn2": f"features.{stages + 1}.1", "classifier": "classifier.1"}
    out: StateDict = {}
    for key, value in state_dict.items():
        if m := _TIMM_BLOCK_KEY.match(key):
            stage, block, module, rest = m.groups()
            inner = "1.0" if module == "conv_pwl" and stage in fused else _TIMM_BLOCK.get(module)
            if module == "se":
                name, _, param = rest.partition(".")
                rest = f"{_TIMM_SE.get(name, name)}.{param}"
            if inner is not None:
                key = f"features.{int(stage) + 1}.{block}.block.{inner}.{rest}"
        else:
            module, _, param = key.partition(".")
            key = f"{top[module]}.{param}" if module in top else key
        out[key] = value  # a key no rule covers stays as is: the strict load names it
    return out


def checkpoint_filter(state_dict: StateDict, model: nn.Module | None = None, *, variant: str = "s",
                      timm: bool = False) -> StateDict:
    """Accept the layout of the library whose network this entry is; refuse the other's, naming the right entry.

    The layouts hold the same tensors, so the key names are all that tells which padding and
    BatchNorm epsilon the weights were trained with. (timm's layout alone cannot tell
    ``tf_efficientnetv2_*`` from ``efficientnetv2_*``: both entries accept it.)
    """
    return accept_library_layout(
        state_dict, timm=timm, from_timm=partial(_timm_to_torchvision, stages=len(STAGES[variant])),
        refuse_torchvision="the checkpoint holds torchvision's EfficientNetV2 layout (symmetric padding, BatchNorm "
                           f"eps 1e-3), which is not timm's network; load it as efficientnet_v2_{variant}",
        refuse_timm=f"the checkpoint holds timm's EfficientNetV2 layout, not torchvision's network; load it as "
                    f"tf_efficientnetv2_{variant} (TF's port: 'SAME' padding) or efficientnetv2_{variant} (timm's "
                    "own: BatchNorm eps 1e-5)")


for _variant, _cfg in VARIANTS.items():
    _head = (f"features.{len(STAGES[_variant]) + 1}.", "classifier.")
    register(ModelSpec(name=f"efficientnet_v2_{_variant}", family="efficientnetv2", builder=EfficientNetV2,
                       input_size=_cfg["input_size"], crop_pct=1.0, interpolation="bilinear",
                       config=dict(variant=_variant, dropout=_cfg["dropout"]), classifier_weight="classifier.1.weight",
                       checkpoint_filter=partial(checkpoint_filter, variant=_variant), head_prefixes=_head,
                       checkpoints=("torchvision",)))
    # timm's port of the TF release: same tensors, TF "SAME" padding (see the module docstring); timm's test
    # size and preprocessing (mean/std 0.5, bicubic, crop 1.0)
    register(ModelSpec(name=f"tf_efficientnetv2_{_variant}", family="efficientnetv2", builder=EfficientNetV2,
                       input_size=_cfg["input_size"], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0,
                       interpolation="bicubic", classifier_weight="classifier.1.weight",
                       config=dict(variant=_variant, dropout=_cfg["dropout"], same_padding=True),
                       checkpoint_filter=partial(checkpoint_filter, variant=_variant, timm=True), head_prefixes=_head,
                       checkpoints=(f"timm tf_efficientnetv2_{_variant}",)))
    # timm's own: timm's keys, symmetric padding, BatchNorm eps 1e-5; timm's test size and preprocessing
    register(ModelSpec(name=f"efficientnetv2_{_variant}", family="efficientnetv2", builder=EfficientNetV2,
                       input_size=TIMM_TEST_SIZE[_variant], crop_pct=1.0, interpolation="bicubic",
                       classifier_weight="classifier.1.weight",
                       config=dict(variant=_variant, dropout=_cfg["dropout"], bn_eps=1e-5),
                       checkpoint_filter=partial(checkpoint_filter, variant=_variant, timm=True), head_prefixes=_head,
                       checkpoints=(f"timm efficientnetv2_{_variant}",)))
