"""timm:NAME and torchvision:NAME: specs from the library's config, its checkpoints, export and parity end to end."""

import onnx
import pytest
import torch
from click.testing import CliRunner

from lightexport import api
from lightexport.calib.preprocess import Preprocess
from lightexport.cli import cli
from lightexport.errors import UnknownModelError, UsageError
from lightexport.loading import load_model
from lightexport.model_defs import get_spec, is_registered, list_models
from tests.conftest import randomize_bn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def test_specs_come_from_the_libraries_configs():
    spec = get_spec("timm:resnet18")  # default tag a1_in1k: crop 0.95, bicubic
    cfg = timm.models.get_pretrained_cfg("resnet18")
    assert (spec.input_size, spec.crop_pct, spec.interpolation, spec.mean) == (224, cfg.crop_pct, "bicubic", cfg.mean)
    assert get_spec("timm:resnet18.tv_in1k").crop_pct == 0.875  # a tag picks its own config
    spec = get_spec("torchvision:regnet_y_400mf")  # default weights IMAGENET1K_V2: resize 232, crop 224
    assert (spec.input_size, spec.interpolation, spec.classifier_weight) == (224, "bilinear", "fc.weight")
    assert Preprocess.from_spec(spec).resize_size == 232
    assert is_registered("timm:resnet18") and "timm:resnet18" not in list_models()


@pytest.mark.parametrize("name, needle", [("timm:resnet_18", "timm:resnet18"),
                                          ("torchvision:mobilenet_v3_smal", "torchvision:mobilenet_v3_small")])
def test_unknown_library_names_suggest(name, needle):
    with pytest.raises(UnknownModelError, match=needle):
        get_spec(name)


def test_torchvision_has_no_backbone_mode_here():
    with pytest.raises(UsageError, match="no backbone mode"):
        load_model("torchvision:mobilenet_v3_small", features=True)


def test_random_weights_get_measured_batchnorm_statistics():
    module = load_model("timm:lcnet_050").module
    variances = [m.running_var for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert variances and all(not torch.all(v == 1) for v in variances)


@pytest.mark.parametrize("library, name, size", [("timm", "lcnet_050", 96),
                                                 ("torchvision", "mobilenet_v3_small", 96)])
def test_library_checkpoint_exports_fused_and_passes_parity_from_provenance(tmp_path, library, name, size):
    torch.manual_seed(0)
    if library == "timm":
        reference = timm.create_model(name, pretrained=False, num_classes=10)
    else:
        reference = torchvision.models.get_model(name, weights=None, num_classes=10)
    reference = randomize_bn(reference.eval(), seed=1)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_model(f"{library}:{name}", path)  # class count read from the checkpoint's head
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x), rtol=0, atol=0)
    out = tmp_path / f"{name}.onnx"
    result = CliRunner().invoke(cli, ["onnx", f"{library}:{name}", "--weights", str(path), "--fuse", "--check",
                                      "--input-size", str(size), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rebuilt = api.reference_for(out)  # the recorded model name and checkpoint, found again by its hash
    assert rebuilt.name == f"{library}:{name}" and rebuilt.spec.family.startswith(library)
    report = api.verify(out, rebuilt, inputs=2, progress=False)
    assert report.passed and report.outputs[0].max_rel < 1e-5
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert not ops & {"BatchNormalization", "Dropout"}
