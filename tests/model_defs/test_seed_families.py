"""MobileNeXt, ShuffleNetV1 and the BlazeFace backbone: no library implements them, so each is checked
against its paper's complexity figures, against its block written out independently with functional ops,
and through a fused ONNX export (no BatchNormalization/Dropout left, fp32 parity)."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from click.testing import CliRunner

from lightexport.cli import cli
from lightexport.loading import load_model
from lightexport.model_defs import create_model, get_spec
from lightexport.model_defs.complexity import complexity
from lightexport.model_defs.mobilenext import SandGlass
from lightexport.model_defs.shufflenetv1 import ShuffleUnit, channel_shuffle
from tests.conftest import randomize_bn
from tests.model_defs.reference_checks import fused_onnx_ops


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _saved(tmp_path, name, seed=0):
    torch.manual_seed(seed)
    model = randomize_bn(create_model(name), seed=seed)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return model, path


# -- MobileNeXt ----------------------------------------------------------------------------------------------
# Paper (Zhou et al. 2020), width multiplier table: params (M), MAdds (M). We count 3.54 M for 1.0x with
# the authors' code (its stem and 1000-class head included); the paper rounds its table to 3.4 M.
MOBILENEXT_PAPER = {"mobilenext_100": (3.4, 300), "mobilenext_140": (6.1, 590)}


@pytest.mark.parametrize("name", MOBILENEXT_PAPER)
def test_mobilenext_size_matches_paper(name):
    params, gmacs = complexity(get_spec(name))
    paper_params, paper_madds = MOBILENEXT_PAPER[name]
    assert abs(params / 1e6 / paper_params - 1) < 0.05
    assert abs(gmacs * 1000 / paper_madds - 1) < 0.04


def test_sandglass_block_is_dw_reduce_expand_dw_with_wide_shortcut():
    torch.manual_seed(0)
    block = randomize_bn(SandGlass(96, 96, 1, 6)).eval()
    assert block.identity
    c = block.conv
    x = torch.randn(2, 96, 9, 9)
    y = F.relu6(_bn(F.conv2d(x, c[0].weight, padding=1, groups=96), c[1]))  # depthwise on the wide input
    y = _bn(F.conv2d(y, c[3].weight), c[4])  # reduce to 96 // 6 = 16, linear (no activation)
    assert c[3].out_channels == 16
    y = F.relu6(_bn(F.conv2d(y, c[5].weight), c[6]))  # expand back
    y = _bn(F.conv2d(y, c[8].weight, padding=1, groups=96), c[9]) + x  # depthwise, then the wide shortcut
    with torch.no_grad():
        torch.testing.assert_close(block(x), y, rtol=1e-5, atol=1e-5)


def test_mobilenext_backbone_and_fused_export(tmp_path):
    feats = create_model("mobilenext_100", fork_feat=True)(torch.randn(1, 3, 64, 64))
    assert [(f.shape[1], 64 // f.shape[-1]) for f in feats] == [(144, 4), (192, 8), (384, 16), (1280, 32)]
    _, path = _saved(tmp_path, "mobilenext_050")
    assert not fused_onnx_ops(tmp_path, "mobilenext_050", path) & {"BatchNormalization", "Dropout"}


# -- ShuffleNetV1 --------------------------------------------------------------------------------------------
# Paper Table 1 (1x, MFLOPs = multiply-adds, per group count) and Table 8 (g=3 at 0.5x, 1.5x, 2x).
SHUFFLENET_PAPER = {"g1_100": 143, "g2_100": 140, "g3_100": 137, "g4_100": 133, "g8_100": 137,
                    "g3_050": 38, "g3_150": 292, "g3_200": 524}


@pytest.mark.parametrize("variant", SHUFFLENET_PAPER)
def test_shufflenet_v1_madds_match_paper(variant):
    _, gmacs = complexity(get_spec(f"shufflenet_v1_{variant}"))
    assert abs(gmacs * 1000 / SHUFFLENET_PAPER[variant] - 1) < 0.015


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(12.0).reshape(1, 12, 1, 1)
    g, per = 3, 4  # output slot i * g + a holds input channel a * per + i
    want = [a * per + i for i in range(per) for a in range(g)]
    assert channel_shuffle(x, g).flatten().tolist() == want


def test_shufflenet_unit_stride2_concatenates_pooled_input():
    torch.manual_seed(0)
    unit = randomize_bn(ShuffleUnit(24, 240, 2, 3, first_grouped=False)).eval()
    x = torch.randn(2, 24, 16, 16)
    with torch.no_grad():
        y = unit(x)
        branch = _bn(F.conv2d(x, unit.conv_pw1.weight), unit.bn1).relu()
        branch = _bn(F.conv2d(channel_shuffle(branch, 3), unit.conv_dw.weight, stride=2, padding=1, groups=60),
                     unit.bn2)
        branch = _bn(F.conv2d(branch, unit.conv_pw2.weight, groups=3), unit.bn3)
    assert unit.conv_pw1.groups == 1 and unit.conv_pw2.groups == 3
    want = torch.cat((F.avg_pool2d(x, 3, 2, 1), branch), 1).relu()
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_shufflenet_v1_fused_export_keeps_one_transpose_per_shuffle(tmp_path):
    _, path = _saved(tmp_path, "shufflenet_v1_g3_100")
    ops = fused_onnx_ops(tmp_path, "shufflenet_v1_g3_100", path)
    assert not ops & {"BatchNormalization", "Dropout"}
    graph = onnx.load(str(tmp_path / "shufflenet_v1_g3_100.onnx")).graph
    assert sum(n.op_type == "Transpose" for n in graph.node) == 16  # one per unit (4 + 8 + 4)


# -- BlazeFace backbone --------------------------------------------------------------------------------------


def _blaze_params() -> int:
    """Parameters from the paper's Table 4, counted by hand (BN: 2 per channel)."""
    def sep(cin, cout):  # dw 5x5 + BN, pw 1x1 + BN
        return cin * 25 + 2 * cin + cin * cout + 2 * cout

    total = 3 * 24 * 25 + 2 * 24  # 5x5 stride-2 stem + BN
    singles = [(24, 24), (24, 24), (24, 48), (48, 48), (48, 48)]
    doubles = [(48, 96), (96, 96), (96, 96), (96, 96), (96, 96), (96, 96)]
    total += sum(sep(a, b) for a, b in singles) + sum(sep(a, 24) + sep(24, b) for a, b in doubles)
    total += (24 * 48 + 2 * 48) + (48 * 96 + 2 * 96) + (96 * 96 + 2 * 96)  # 1x1 + BN shortcuts of stride-2 blocks
    return total


def test_blazeface_backbone_shapes_and_size():
    spec = get_spec("blazeface_backbone")
    assert spec.input_size == 128 and spec.backbone_only
    feats = create_model("blazeface_backbone")(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 96, 16, 16), (1, 96, 8, 8)]
    params, _ = complexity(spec)
    assert params == _blaze_params()
    loaded = load_model("blazeface_backbone")  # backbone mode without being asked
    assert loaded.features


def test_blazeface_cli_export_names_its_feature_maps(tmp_path):
    model, path = _saved(tmp_path, "blazeface_backbone")
    out = tmp_path / "blaze.onnx"
    result = CliRunner().invoke(cli, ["onnx", "blazeface_backbone", "--weights", str(path), "--fuse", "--check",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(out)).graph
    assert [o.name for o in graph.output] == ["feat0", "feat1"]
    assert not {n.op_type for n in graph.node} & {"BatchNormalization", "Dropout"}
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    got = ort.InferenceSession(str(out)).run(None, {graph.input[0].name: x})
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    for a, b in zip(got, want):
        assert np.abs(a - b.numpy()).max() <= 1e-5 * float(b.abs().max())
