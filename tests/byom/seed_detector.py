"""The "seed detector": a YOLOv8 detector on a user's own copy of the FasterNet code.

This file stands for what a user of seed 001 has in ``ultralytics/nn/modules/FasterNet.py``
plus the YAML that plugs it into YOLOv8 (FasterNet -> SPPF -> YOLOv8 PAN neck -> Detect).
It is written for lightexport's tests ("bring your own model"): the passes must cope with
a model the project did not define, in the shape and naming a user's copy of the official
FasterNet code (github JierunChen/FasterNet, MIT) has:

* ``Partial_conv3(dim, n_div, forward)`` picks its forward in ``__init__`` by assigning an
  instance attribute: ``forward_split_cat`` (split, conv, cat) or ``forward_slicing``
  (clone, overwrite the first channels in place);
* ``MLPBlock`` = ``x + drop_path(mlp(spatial_mixing(x)))`` with timm's ``DropPath``,
  ``mlp`` = Conv1x1 -> BN -> act -> Conv1x1 (no biases), optional ``layer_scale``;
* ``BasicStage``, ``PatchEmbed`` (k4 s4 conv + BN), ``PatchMerging`` (k2 s2 conv + BN);
* ``FasterNet`` with a flat ``stages`` Sequential (stage, merge, stage, ...), ``fork_feat``
  returning the four stage outputs each through its own BN ``norm0/norm2/norm4/norm6``, and
  a ``width_list`` measured by a dummy forward at 640 in ``__init__`` (in training mode, so
  it moves the BN running statistics once, as the user's copy does).

The code here is an independent implementation of that structure, not a copy of the
official file, the blog post, or Ultralytics. Ultralytics (AGPL-3.0) is only a test-time
dependency: the neck and head use ``ultralytics.nn.modules`` (Conv, C2f, SPPF, Concat, Detect)
exactly as the YAML would, imported lazily so that ``FasterNet``/``build_backbone`` work
without it.

What ``SeedDetector.forward`` returns is whatever Ultralytics' ``Detect`` returns
(checked against ultralytics 8.4.190):

* ``train()`` mode: a dict ``{"boxes": [B, 64, A], "scores": [B, nc, A], "feats": [P3, P4, P5]}``
  (raw DFL logits, raw class logits, the three neck maps), A = 8400 anchors at 640;
* ``eval()`` mode: a tuple ``(y, raw)`` with ``y`` = decoded predictions ``[B, 4 + nc, A]``
  (xywh boxes in input pixels, then sigmoid class scores) and ``raw`` the dict above;
* ``eval()`` with ``model.detect.export = True`` (what Ultralytics' exporter sets): ``y`` alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from functools import partial

import torch
import torch.nn as nn
from torch import Tensor

try:  # timm >= 0.9
    from timm.layers import DropPath, trunc_normal_
except ImportError:  # older timm, the import path the official code uses
    from timm.models.layers import DropPath, trunc_normal_


# --------------------------------------------------------------------------------------
# The user's FasterNet file
# --------------------------------------------------------------------------------------


class Partial_conv3(nn.Module):  # noqa: N801  (the official class name)
    """PConv: a 3x3 conv on the first ``dim // n_div`` channels, the rest passed through."""

    def __init__(self, dim: int, n_div: int, forward: str):
        super().__init__()
        self.dim_conv3 = dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
        # The official code binds the chosen form to the instance, not the class.
        if forward == "slicing":
            self.forward = self.forward_slicing
        elif forward == "split_cat":
            self.forward = self.forward_split_cat
        else:
            raise NotImplementedError(f"unknown PConv forward type {forward!r}")

    def forward_slicing(self, x: Tensor) -> Tensor:
        # Inference only: the in-place write would break autograd through x.
        # Clone first, since the block's residual still needs the untouched input.
        y = x.clone()
        y[:, : self.dim_conv3, :, :] = self.partial_conv3(y[:, : self.dim_conv3, :, :])
        return y

    def forward_split_cat(self, x: Tensor) -> Tensor:
        # Training and inference.
        head, tail = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(head), tail), 1)


class MLPBlock(nn.Module):
    """The FasterNet block: ``x + drop_path(mlp(spatial_mixing(x)))``."""

    def __init__(
        self,
        dim: int,
        n_div: int,
        mlp_ratio: float,
        drop_path: float,
        layer_scale_init_value: float,
        act_layer,
        norm_layer,
        pconv_fw_type: str,
    ):
        super().__init__()
        self.dim = dim
        self.mlp_ratio = mlp_ratio
        self.n_div = n_div
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            norm_layer(hidden),
            act_layer(),
            nn.Conv2d(hidden, dim, 1, bias=False),
        )
        self.spatial_mixing = Partial_conv3(dim, n_div, pconv_fw_type)
        if layer_scale_init_value > 0:
            self.layer_scale = nn.Parameter(layer_scale_init_value * torch.ones(dim), requires_grad=True)
            self.forward = self.forward_layer_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.mlp(self.spatial_mixing(x)))

    def forward_layer_scale(self, x: Tensor) -> Tensor:
        scaled = self.layer_scale.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.spatial_mixing(x))
        return x + self.drop_path(scaled)


class BasicStage(nn.Module):
    """``depth`` FasterNet blocks of one width (``drop_path`` is a per-block list)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        n_div: int,
        mlp_ratio: float,
        drop_path,
        layer_scale_init_value: float,
        norm_layer,
        act_layer,
        pconv_fw_type: str,
    ):
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                MLPBlock(
                    dim=dim,
                    n_div=n_div,
                    mlp_ratio=mlp_ratio,
                    drop_path=drop_path[j],
                    layer_scale_init_value=layer_scale_init_value,
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    pconv_fw_type=pconv_fw_type,
                )
                for j in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class PatchEmbed(nn.Module):
    """Stem: non-overlapping ``patch_size`` conv (no bias) + optional norm, no activation."""

    def __init__(self, patch_size: int, patch_stride: int, in_chans: int, embed_dim: int, norm_layer):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_stride, bias=False)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class PatchMerging(nn.Module):
    """Downsampling between stages: k2 s2 conv doubling the width (no bias) + optional norm."""

    def __init__(self, patch_size2: int, patch_stride2: int, dim: int, norm_layer):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=patch_size2, stride=patch_stride2, bias=False)
        self.norm = norm_layer(2 * dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.reduction(x))


class FasterNet(nn.Module):
    """FasterNet with the official constructor arguments (defaults: the T2-like detection copy).

    ``fork_feat=True`` (the detection backbone): ``forward`` returns a list of the four stage
    outputs, each through its own BN ``norm{0,2,4,6}``, with widths ``embed_dim * 2**i``
    (96, 192, 384, 768 by default) at strides 4, 8, 16, 32; ``width_list`` holds those widths.
    ``fork_feat=False`` (the classifier): ``avgpool_pre_head`` (pool, 1x1 conv to
    ``feature_dim``, act) then ``head`` (Linear), the official checkpoint names.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths=(1, 2, 8, 2),
        mlp_ratio: float = 2.0,
        n_div: int = 4,
        patch_size: int = 4,
        patch_stride: int = 4,
        patch_size2: int = 2,  # for the merging layers
        patch_stride2: int = 2,
        patch_norm: bool = True,
        feature_dim: int = 1280,
        drop_path_rate: float = 0.1,
        layer_scale_init_value: float = 0,
        norm_layer="BN",
        act_layer="RELU",
        fork_feat: bool = True,
        init_cfg=None,
        pretrained=None,
        pconv_fw_type: str = "split_cat",
        **kwargs,
    ):
        super().__init__()
        if norm_layer == "BN":
            norm_layer = nn.BatchNorm2d
        else:
            raise NotImplementedError(f"norm_layer {norm_layer!r}")
        if act_layer == "GELU":
            act_layer = nn.GELU
        elif act_layer == "RELU":
            act_layer = partial(nn.ReLU, inplace=True)
        else:
            raise NotImplementedError(f"act_layer {act_layer!r}")

        if not fork_feat:
            self.num_classes = num_classes
        self.num_stages = len(depths)
        self.embed_dim = embed_dim
        self.patch_norm = patch_norm
        self.num_features = int(embed_dim * 2 ** (self.num_stages - 1))
        self.mlp_ratio = mlp_ratio
        self.depths = depths

        self.patch_embed = PatchEmbed(
            patch_size=patch_size,
            patch_stride=patch_stride,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None,
        )

        # Stochastic depth grows linearly over all blocks of the network.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        layers = []
        for i in range(self.num_stages):
            dim = int(embed_dim * 2**i)
            first = sum(depths[:i])
            layers.append(
                BasicStage(
                    dim=dim,
                    depth=depths[i],
                    n_div=n_div,
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[first : first + depths[i]],
                    layer_scale_init_value=layer_scale_init_value,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    pconv_fw_type=pconv_fw_type,
                )
            )
            if i < self.num_stages - 1:
                layers.append(
                    PatchMerging(patch_size2=patch_size2, patch_stride2=patch_stride2, dim=dim, norm_layer=norm_layer)
                )
        self.stages = nn.Sequential(*layers)  # flat: stage, merge, stage, merge, ...

        self.fork_feat = fork_feat
        if fork_feat:
            self.forward = self.forward_det
            self.out_indices = [0, 2, 4, 6]  # positions of the stages inside self.stages
            for k, idx in enumerate(self.out_indices):
                self.add_module(f"norm{idx}", norm_layer(int(embed_dim * 2**k)))
        else:
            self.forward = self.forward_cls
            self.avgpool_pre_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(self.num_features, feature_dim, 1, bias=False),
                act_layer(),
            )
            self.head = nn.Linear(feature_dim, num_classes) if num_classes > 0 else nn.Identity()

        self.apply(self.cls_init_weights)
        self.init_cfg = init_cfg
        self.pretrained = pretrained  # the official code loads these via mmcv; a test has none

        if fork_feat:
            # What the seed's copy does so that Ultralytics' parse_model can read the output
            # widths: one forward at 640 in training mode (so BN running stats move once).
            self.width_list = [f.size(1) for f in self.forward(torch.randn(1, in_chans, 640, 640))]

    @staticmethod
    def cls_init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_det(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)
        outs = []
        for idx, layer in enumerate(self.stages):
            x = layer(x)
            if idx in self.out_indices:
                outs.append(getattr(self, f"norm{idx}")(x))
        return outs

    def forward_cls(self, x: Tensor) -> Tensor:
        x = self.stages(self.patch_embed(x))
        x = self.avgpool_pre_head(x)
        return self.head(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------
# The YAML: FasterNet -> SPPF -> YOLOv8 neck -> Detect
# --------------------------------------------------------------------------------------

# [depth_multiple, width_multiple, max_channels], as in the seed's YAML.
SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}

# Scale "n" worked out with parse_model's rules (channels = ceil8(min(c, 1024) * 0.25),
# repeats = max(round(n * 0.33), 1) for n > 1; FasterNet's own widths are not scaled):
#
#   idx  from     module       YAML args        built as                      out ch
#   0-4  -1       FasterNet    []               FasterNet() -> P2..P5         96,192,384,768
#   5    -1       SPPF         [1024, 5]        SPPF(768, 256, 5)             256
#   6    -1       nn.Upsample  [None,2,nearest] Upsample x2                   256
#   7    [-1,3]   Concat       [1]              cat(256, P4 384)              640
#   8    -1       C2f x3       [512]            C2f(640, 128, n=1)            128
#   9    -1       nn.Upsample                   Upsample x2                   128
#   10   [-1,2]   Concat       [1]              cat(128, P3 192)              320
#   11   -1       C2f x3       [256]            C2f(320, 64, n=1)   P3/8      64
#   12   -1       Conv         [256, 3, 2]      Conv(64, 64, 3, 2)            64
#   13   [-1,8]   Concat       [1]              cat(64, 128)                  192
#   14   -1       C2f x3       [512]            C2f(192, 128, n=1)  P4/16     128
#   15   -1       Conv         [512, 3, 2]      Conv(128, 128, 3, 2)          128
#   16   [-1,5]   Concat       [1]              cat(128, 256)                 384
#   17   -1       C2f x3       [1024]           C2f(384, 256, n=1)  P5/32     256
#   18   [11..17] Detect       [nc]             Detect(nc, 16, legacy, ch=(64,128,256))
#
# Detect is the legacy (v8) head since the YAML has no C3k2; SPPF is the legacy one with an
# activated cv1 (a 3-argument row); C2f keeps its default shortcut=False.


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def scaled_channels(c: int, scale: str = "n") -> int:
    _, width, max_channels = SCALES[scale]
    return make_divisible(min(c, max_channels) * width, 8)


def scaled_repeats(n: int, scale: str = "n") -> int:
    depth = SCALES[scale][0]
    return max(round(n * depth), 1) if n > 1 else n


@contextlib.contextmanager
def _hermetic_ultralytics_import():
    """Import Ultralytics without its process-wide side effects leaking into the test run.

    ``import ultralytics`` (8.4) resolves two DNS names unless YOLO_OFFLINE is set, writes
    ``settings.json`` under YOLO_CONFIG_DIR (else ~/.config/Ultralytics), sets
    OMP_NUM_THREADS=1 when unset, changes torch/numpy print options, installs warning
    filters (TracerWarning ignored), replaces ``torch.save`` and ``PIL.Image.open`` (its version retries an
    unreadable image through pi-heif, which it would pip-install). Undo what can be undone.
    """
    import numpy as np
    from PIL import Image

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "lightexport-ultralytics-config"))
    omp = os.environ.get("OMP_NUM_THREADS")
    np_opts = np.get_printoptions()
    filters = list(warnings.filters)
    torch_save, image_open = torch.save, Image.open
    try:
        yield
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        np.set_printoptions(**np_opts)
        torch.set_printoptions(profile="default")
        warnings.filters[:] = filters
        torch.save, Image.open = torch_save, image_open


def ultralytics_modules():
    """``ultralytics.nn.modules`` (raises ImportError when Ultralytics is not installed)."""
    import sys

    if "ultralytics.nn.modules" in sys.modules:
        return sys.modules["ultralytics.nn.modules"]
    with _hermetic_ultralytics_import():
        import ultralytics.nn.modules as modules
    return modules


class SeedDetector(nn.Module):
    """YOLOv8-{scale} with the user's FasterNet as backbone, wired as the seed's YAML.

    Attributes: ``backbone`` (FasterNet, fork_feat=True), ``sppf``, ``up4``/``up3``
    (nearest x2), ``cat*`` (Concat), ``c2f_p4``/``c2f_p3`` (top-down), ``down3``/``down4``
    (stride-2 Conv), ``c2f_n4``/``c2f_n5`` (bottom-up), ``detect`` (Ultralytics Detect);
    ``stride`` = tensor([8, 16, 32]); ``names``; ``nc``. See the module docstring for what
    ``forward`` returns in each mode.
    """

    input_shape = (1, 3, 640, 640)

    def __init__(self, scale: str = "n", nc: int = 80, pconv: str = "split_cat"):
        super().__init__()
        um = ultralytics_modules()
        Conv, C2f, SPPF, Concat, Detect = um.Conv, um.C2f, um.SPPF, um.Concat, um.Detect  # noqa: N806
        ch = partial(scaled_channels, scale=scale)
        rep = partial(scaled_repeats, scale=scale)
        self.scale, self.nc = scale, nc
        self.names = {i: str(i) for i in range(nc)}

        self.backbone = FasterNet(fork_feat=True, pconv_fw_type=pconv)  # the YAML's `FasterNet, []`
        _, c3, c4, c5 = self.backbone.width_list  # 96, 192, 384, 768 (not width-scaled)
        s5, h4, h3 = ch(1024), ch(512), ch(256)

        self.sppf = SPPF(c5, s5, 5)
        self.sppf.cv1.act = Conv.default_act  # what parse_model does for a legacy 3-arg SPPF row
        self.up4 = nn.Upsample(None, 2, "nearest")
        self.cat4 = Concat(1)
        self.c2f_p4 = C2f(s5 + c4, h4, rep(3))
        self.up3 = nn.Upsample(None, 2, "nearest")
        self.cat3 = Concat(1)
        self.c2f_p3 = C2f(h4 + c3, h3, rep(3))  # P3/8 output
        self.down3 = Conv(h3, h3, 3, 2)
        self.cat_n4 = Concat(1)
        self.c2f_n4 = C2f(h3 + h4, h4, rep(3))  # P4/16 output
        self.down4 = Conv(h4, h4, 3, 2)
        self.cat_n5 = Concat(1)
        self.c2f_n5 = C2f(h4 + s5, s5, rep(3))  # P5/32 output

        # parse_model sets Detect.legacy on the class (process-wide) before building the
        # head; do it for the construction only and keep the flag on the instance.
        legacy = Detect.legacy
        Detect.legacy = True
        try:
            self.detect = Detect(nc, 16, False, [h3, h4, s5])
        finally:
            Detect.legacy = legacy
        self.detect.legacy = True
        self.detect.inplace = True

        # What DetectionModel.__init__ does next: strides from a 256x256 dry run (eval mode,
        # head in training mode so it returns the raw dict), then the head's bias init,
        # then initialize_weights: every BatchNorm2d (FasterNet's too) gets eps=1e-3,
        # momentum=0.03.
        self.eval()
        self.detect.training = True
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, 3, 256, 256))["feats"]
        self.detect.stride = torch.tensor([256 / f.shape[-2] for f in feats])
        self.stride = self.detect.stride
        self.train()
        self.detect.bias_init()
        for m in self.modules():
            if type(m) is nn.BatchNorm2d:
                m.eps = 1e-3
                m.momentum = 0.03

    def forward(self, x: Tensor):
        _, p3, p4, p5 = self.backbone(x)
        s5 = self.sppf(p5)  # 5
        h4 = self.c2f_p4(self.cat4([self.up4(s5), p4]))  # 6, 7, 8
        o3 = self.c2f_p3(self.cat3([self.up3(h4), p3]))  # 9, 10, 11
        o4 = self.c2f_n4(self.cat_n4([self.down3(o3), h4]))  # 12, 13, 14
        o5 = self.c2f_n5(self.cat_n5([self.down4(o4), s5]))  # 15, 16, 17
        return self.detect([o3, o4, o5])  # 18


def build(scale: str = "n", nc: int = 80, pconv: str = "split_cat", *, seed: int | None = 0) -> SeedDetector:
    """The seed detector in training mode (call ``.eval()``), random weights from ``seed``.

    The global RNG is left as it was; ``seed=None`` draws from it instead. Equal seeds give
    equal weights whatever ``pconv`` is, so the two PConv forms can be compared.
    """
    if seed is None:
        return SeedDetector(scale, nc, pconv)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SeedDetector(scale, nc, pconv)


def build_backbone(pconv: str = "split_cat", *, seed: int | None = 0, **kwargs) -> FasterNet:
    """Just the user's FasterNet (fork_feat=True), BN eps 1e-5 as the user's own class has."""
    kwargs.setdefault("fork_feat", True)
    if seed is None:
        return FasterNet(pconv_fw_type=pconv, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FasterNet(pconv_fw_type=pconv, **kwargs)


if __name__ == "__main__":
    x = torch.rand(*SeedDetector.input_shape)
    backbone = build_backbone().eval()
    with torch.no_grad():
        print("FasterNet:", [tuple(f.shape) for f in backbone(x)], "width_list", backbone.width_list)
        model = build().eval()
        y, raw = model(x)
        print("SeedDetector eval: y", tuple(y.shape))
        shapes = {k: tuple(v.shape) if torch.is_tensor(v) else [tuple(t.shape) for t in v] for k, v in raw.items()}
        print("  raw:", shapes)
        model.detect.export = True
        print("  export=True:", tuple(model(x).shape))
    print("parameters:", sum(p.numel() for p in model.parameters()))
