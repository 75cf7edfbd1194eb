"""Random weights that behave like trained ones in scale: BN statistics measured on real photos."""

import numpy as np
import pytest
import torch

from lightexport.loading import load_model
from lightexport.parity import make_inputs


@pytest.mark.parametrize("name", ["fasternet_t0", "mobilenet_v2", "shufflenet_v2_x0_5"])
def test_every_batchnorm_normalizes_what_it_sees_on_the_photos(name):
    loaded = load_model(name)
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, key=key: seen.__setitem__(key, args[0]))
             for key, m in loaded.module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        logits = loaded.module(torch.from_numpy(np.concatenate(make_inputs(loaded.spec, 8))))
    for hook in hooks:
        hook.remove()
    bns = dict(loaded.module.named_modules())
    # Normalized by its running statistics, each channel is centred and the layer has unit variance
    # on the photos; channels keep their relative scales (a per-channel variance would amplify
    # channels where random weights cancel the signal). The defaults are off by orders of magnitude.
    for key, x in seen.items():
        bn = bns[key]
        normalized = (x - bn.running_mean[:, None, None]) / bn.running_var[:, None, None].sqrt()
        assert normalized.mean(dim=(0, 2, 3)).abs().max() < 1e-3, key
        assert normalized.var(dim=(0, 2, 3)).mean() == pytest.approx(1.0, rel=1e-3), key
        assert torch.all(bn.running_var == bn.running_var[0]), key
    # logits that depend on the image: with the default BN statistics MobileNetV2's were ~1e-8
    assert logits.std(dim=0).mean() > 1e-2


def test_random_weights_are_reproducible_across_processes_and_thread_counts():
    import subprocess
    import sys

    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
            "from lightexport.loading import load_model; "
            "torch.save(load_model('fasternet_t0').module.state_dict(), sys.argv[2])")
    states = []
    for threads in (1, 2):
        path = f"{pytest.importorskip('tempfile').mkdtemp()}/sd.pt"
        subprocess.run([sys.executable, "-c", code, str(threads), path], check=True)
        states.append(torch.load(path))
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=1e-5, atol=1e-6)


def test_given_weights_are_left_alone(tmp_path):
    from lightexport.model_defs import create_model

    model = create_model("mobilenet_v2")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    loaded = load_model("mobilenet_v2", tmp_path / "w.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
