"""FasterNet (Chen et al., CVPR 2023), module tree and parameter names as in the official release.

Matching the official names (``stages`` alternating blocks and merging layers,
``avgpool_pre_head``, ``head``) means official checkpoints load without remapping;
timm's layout is remapped by :func:`checkpoint_filter_fn`.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from lightexport.model_defs.features import FeatureInfo
from lightexport.model_defs.layers import DropPath
from lightexport.model_defs.registry import ModelSpec, StateDict, register

PCONV_FORMS = ("split_cat", "slicing")


class Partial_conv3(nn.Module):  # noqa: N801 - official class name, kept for recognisability
    """PConv: a 3x3 conv over the first ``dim // n_div`` channels, the rest passed through.

    ``form`` selects between two mathematically identical forwards: ``split_cat``
    (usable for training and export) and ``slicing`` (in-place write into a clone,
    inference only). The reparam pass switches between them.
    """

    def __init__(self, dim: int, n_div: int, form: str = "split_cat") -> None:
        super().__init__()
        self.dim_conv3 = dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
        self.form = form

    @property
    def form(self) -> str:
        return self._form

    @form.setter
    def form(self, value: str) -> None:
        if value not in PCONV_FORMS:
            raise ValueError(f"PConv form must be one of {PCONV_FORMS}, got {value!r}")
        self._form = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._form == "slicing":
            x = x.clone()  # the block's residual still needs the untouched input
            x[:, : self.dim_conv3] = self.partial_conv3(x[:, : self.dim_conv3])
            return x
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(x1), x2), 1)


class MLPBlock(nn.Module):
    """FasterNet block: ``x + drop_path(layer_scale * mlp(pconv(x)))``."""

    def __init__(
        self,
        dim: int,
        n_div: int,
        mlp_ratio: float,
        drop_path: float,
        layer_scale_init_value: float,
        act_layer: type[nn.Module],
        norm_layer: type[nn.Module],
        pconv_form: str,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            norm_layer(hidden),
            act_layer(),
            nn.Conv2d(hidden, dim, 1, bias=False),
        )
        self.spatial_mixing = Partial_conv3(dim, n_div, pconv_form)
        self.layer_scale: nn.Parameter | None = None
        if layer_scale_init_value > 0:
            self.layer_scale = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.spatial_mixing(x))
        if self.layer_scale is not None:
            y = self.layer_scale.view(1, -1, 1, 1) * y
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the layer scale into the last 1x1 conv (timm's ``reparameterize`` protocol)."""
        if self.layer_scale is None:
            return
        conv = self.mlp[-1]
        conv.weight.mul_(self.layer_scale.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(self.layer_scale)
        self.layer_scale = None


class BasicStage(nn.Module):
    def __init__(self, depth: int, drop_path: list[float], **block_kwargs: Any) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[MLPBlock(drop_path=dp, **block_kwargs) for dp in drop_path[:depth]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, patch_stride: int, in_chans: int, embed_dim: int, norm_layer) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_stride, bias=False)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PatchMerging(nn.Module):
    def __init__(self, patch_size2: int, patch_stride2: int, dim: int, norm_layer) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, patch_size2, patch_stride2, bias=False)
        self.norm = norm_layer(2 * dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x))


class FasterNet(nn.Module):
    """FasterNet classifier; ``with_head=False`` builds the detection backbone's trunk instead of the head.

    That trunk has one norm per stage output (``norm0, norm2, norm4, norm6``), as the official
    detection code adds them; backbone mode returns each stage's output through its norm.
    """

    feature_trunk = ("patch_embed", "stages")

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (1, 2, 8, 2),
        mlp_ratio: float = 2.0,
        n_div: int = 4,
        patch_size: int = 4,
        patch_stride: int = 4,
        patch_size2: int = 2,
        patch_stride2: int = 2,
        patch_norm: bool = True,
        feature_dim: int = 1280,
        drop_path_rate: float = 0.1,
        layer_scale_init_value: float = 0.0,
        act_layer: str = "RELU",
        with_head: bool = True,
        pconv_form: str = "split_cat",
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d
        act = {"GELU": nn.GELU, "RELU": partial(nn.ReLU, inplace=True)}[act_layer.upper()]
        self.num_stages = len(depths)
        self.num_features = int(embed_dim * 2 ** (self.num_stages - 1))
        self.patch_embed = PatchEmbed(patch_size, patch_stride, in_chans, embed_dim, norm_layer if patch_norm else None)
        total = sum(depths)  # linear decay over all blocks, as torch.linspace in the official code
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages: list[nn.Module] = []
        for i, depth in enumerate(depths):
            dim = int(embed_dim * 2**i)
            stages.append(
                BasicStage(
                    depth,
                    dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    dim=dim,
                    n_div=n_div,
                    mlp_ratio=mlp_ratio,
                    layer_scale_init_value=layer_scale_init_value,
                    act_layer=act,
                    norm_layer=norm_layer,
                    pconv_form=pconv_form,
                )
            )
            if i < self.num_stages - 1:
                stages.append(PatchMerging(patch_size2, patch_stride2, dim, norm_layer))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [FeatureInfo(f"stages.{2 * i}", int(embed_dim * 2**i), patch_stride * patch_stride2**i,
                                         post=None if with_head else f"norm{2 * i}") for i in range(self.num_stages)]
        if with_head:
            self.num_classes = num_classes
            self.avgpool_pre_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(self.num_features, feature_dim, 1, bias=False), act()
            )
            self.head = nn.Linear(feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        else:  # the detection backbone's feature norms
            for info in self.feature_info:
                self.add_module(info.post, norm_layer(info.channels))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.stages(x)
        x = self.avgpool_pre_head(x)
        return self.head(torch.flatten(x, 1))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_TIMM_STAGE = re.compile(r"^stages\.(\d+)\.(downsample\.)?(.*)$")


def checkpoint_filter_fn(state_dict: StateDict, model: nn.Module | None = None) -> StateDict:
    """Map timm's FasterNet layout onto the official one; official checkpoints pass through.

    timm nests merging layers inside the following stage (``stages.i.downsample``) and
    renames the head (``conv_head``, ``classifier``); the official layout alternates
    blocks (even indices) and merging layers (odd indices) in one flat ``stages`` list.
    """
    if not any(k.startswith(("conv_head.", "classifier.")) or ".downsample." in k for k in state_dict):
        return state_dict
    out: StateDict = {}
    for key, value in state_dict.items():
        match = _TIMM_STAGE.match(key)
        if match:
            stage, is_merge, rest = int(match[1]), match[2], match[3]
            key = f"stages.{2 * stage - 1}.{rest}" if is_merge else f"stages.{2 * stage}.{rest}"
        elif key.startswith("conv_head."):
            key = key.replace("conv_head.", "avgpool_pre_head.1.", 1)
        elif key.startswith("classifier."):
            key = key.replace("classifier.", "head.", 1)
        out[key] = value
    return out


# Variant table (timm's drop-path rates; they only matter in training).
FASTERNET_CONFIGS: dict[str, dict[str, Any]] = {
    "fasternet_t0": dict(embed_dim=40, depths=(1, 2, 8, 2), act_layer="GELU", drop_path_rate=0.0),
    "fasternet_t1": dict(embed_dim=64, depths=(1, 2, 8, 2), act_layer="GELU", drop_path_rate=0.02),
    "fasternet_t2": dict(embed_dim=96, depths=(1, 2, 8, 2), act_layer="RELU", drop_path_rate=0.05),
    "fasternet_s": dict(embed_dim=128, depths=(1, 2, 13, 2), act_layer="RELU", drop_path_rate=0.1),
    "fasternet_m": dict(embed_dim=144, depths=(3, 4, 18, 3), act_layer="RELU", drop_path_rate=0.2),
    "fasternet_l": dict(embed_dim=192, depths=(3, 4, 18, 3), act_layer="RELU", drop_path_rate=0.3),
}

for _name, _cfg in FASTERNET_CONFIGS.items():
    register(
        ModelSpec(
            name=_name,
            family="fasternet",
            builder=FasterNet,
            input_size=224,
            crop_pct=0.9,
            checkpoint_filter=checkpoint_filter_fn,
            config=_cfg,
            checkpoints=("official (JierunChen/FasterNet)", "timm fasternet_*"),
        )
    )
