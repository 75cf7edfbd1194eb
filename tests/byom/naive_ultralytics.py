"""The naive baseline: an ONNX export done the way Ultralytics' exporter does it.

``naive_onnx`` follows ``Exporter.__call__`` + ``Exporter.export_onnx`` of ultralytics 8.4.190
(format='onnx', the defaults: dynamic=False, simplify=True, opset=None, nms=False, batch=1,
fp32) for a model that is *not* an Ultralytics ``DetectionModel``:

1. deep copy, ``requires_grad_(False)``, ``eval()``, ``float()``;
2. ``fuse``: ``DetectionModel.fuse()`` folds BN only into Ultralytics' own ``Conv``/``DWConv``
   blocks (``m.conv = fuse_conv_and_bn(m.conv, m.bn)``, drop ``m.bn``, ``m.forward =
   m.forward_fuse``) and trims unused Detect branches. A plain ``nn.Module`` has no
   ``fuse()``, so the real Exporter would stop there with an AttributeError; for the seed
   user's model (FasterNet inside a DetectionModel) it would fuse the neck and head but leave
   every FasterNet ``nn.Conv2d`` + ``nn.BatchNorm2d`` pair, the ``norm{0,2,4,6}`` BNs, the
   ``DropPath``s and the ``split_cat`` PConv as they are. We do the same;
3. every ``Detect``: ``dynamic=False``, ``export=True``, ``format='onnx'``,
   ``max_det=min(300, anchors)``, ``xyxy=False``, ``shape=None``; every ``C2f``:
   ``forward = forward_split``;
4. one dry run on ``zeros(1, 3, imgsz, imgsz)``;
5. ``torch.onnx.export(..., opset_version=best_onnx_opset (18 on torch >= 2.4, capped at the
   onnx package's max), input_names=['images'], output_names=['output0'], dynamic_axes=None,
   dynamo=False)`` (the TorchScript exporter; do_constant_folding is its default, True);
6. ``onnxslim.slim`` (simplify=True is the default), metadata props, IR version capped at 10.

Ultralytics (AGPL-3.0) is a test-time dependency; this is an independent restatement of
those steps, calling Ultralytics only for ``fuse_conv_and_bn`` and the module classes.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
import torch.nn as nn

try:
    from .seed_detector import ultralytics_modules
except ImportError:  # run as a script from this folder
    from seed_detector import ultralytics_modules


def ultralytics_opset() -> int:
    """The opset Ultralytics' ``best_onnx_opset`` picks for this torch and onnx."""
    import onnx

    try:
        from ultralytics.utils.export.engine import best_onnx_opset

        return best_onnx_opset(onnx)
    except ImportError:  # other Ultralytics layouts: restate its table
        pass
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    table = {(1, 8): 12, (1, 9): 12, (1, 10): 13, (1, 11): 14, (1, 12): 15, (1, 13): 17}
    opset = table.get((major, minor), 17 if (major, minor) < (2, 4) and major >= 2 else 18)
    return min(opset, onnx.defs.onnx_opset_version())


def prepare(model: nn.Module, imgsz: int = 640, fuse: bool = True) -> tuple[nn.Module, torch.Tensor]:
    """Steps 1-4: the model as Ultralytics would trace it, and the dummy input."""
    um = ultralytics_modules()
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    model.float()
    if fuse:
        for m in model.modules():
            if isinstance(m, (um.Conv, um.DWConv)) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
            if isinstance(m, um.Detect) and hasattr(m, "fuse"):
                m.fuse()
    stride = getattr(model, "stride", torch.tensor([8.0, 16.0, 32.0]))
    for m in model.modules():
        if isinstance(m, um.Detect):
            m.dynamic = False
            m.export = True
            m.format = "onnx"
            m.max_det = min(300, sum(int(imgsz / s) ** 2 for s in stride.tolist()))
            m.agnostic_nms = False
            m.xyxy = False
            m.shape = None
        elif isinstance(m, um.C2f):
            m.forward = m.forward_split
    im = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad():
        model(im)  # dry run (also caches Detect's anchors for imgsz)
    return model, im


def naive_onnx(
    model: nn.Module,
    path: str | Path,
    imgsz: int = 640,
    *,
    opset: int | None = None,
    simplify: bool = True,
    fuse: bool = True,
) -> Path:
    """Export ``model`` to ``path`` as Ultralytics' exporter would; returns the path."""
    import onnx

    path = Path(path)
    prepared, im = prepare(model, imgsz, fuse=fuse)
    opset = opset or ultralytics_opset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ultralytics silences TracerWarnings globally
        torch.onnx.export(
            prepared,
            im,
            str(path),
            opset_version=opset,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes=None,
            dynamo=False,
        )
    model_onnx = onnx.load(str(path))
    if simplify:
        try:
            import onnxslim

            model_onnx = onnxslim.slim(model_onnx)
        except Exception as e:  # Ultralytics only warns here
            warnings.warn(f"onnxslim failed: {e}", stacklevel=2)
    stride = getattr(prepared, "stride", torch.tensor([32.0]))
    meta = {
        "description": "naive Ultralytics-style export (lightexport test baseline)",
        "stride": int(max(stride)),
        "task": "detect",
        "batch": 1,
        "imgsz": [imgsz, imgsz],
        "names": getattr(prepared, "names", {}),
        "end2end": False,
    }
    for k, v in meta.items():
        p = model_onnx.metadata_props.add()
        p.key, p.value = k, str(v)
    if getattr(model_onnx, "ir_version", 0) > 10:
        model_onnx.ir_version = 10
    onnx.save(model_onnx, str(path))
    return path


if __name__ == "__main__":
    import collections
    import sys
    import tempfile
    import time

    import numpy as np
    import onnx
    import onnxruntime as ort

    try:
        from .seed_detector import build
    except ImportError:
        from seed_detector import build

    torch.set_num_threads(1)
    pconv = sys.argv[1] if len(sys.argv) > 1 else "split_cat"
    model = build(pconv=pconv).eval()
    f = naive_onnx(model, Path(tempfile.mkdtemp()) / "seed_naive.onnx")
    g = onnx.load(str(f)).graph
    print("ops:", dict(collections.Counter(n.op_type for n in g.node).most_common()))
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
    x = torch.randn(*model.input_shape)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    out = sess.run(None, {"images": x.numpy()})[0]
    ts = []
    for _ in range(20):
        t = time.perf_counter()
        sess.run(None, {"images": x.numpy()})
        ts.append(time.perf_counter() - t)
    print("max abs diff", float(np.abs(out - ref).max()), "median ms", 1e3 * float(np.median(ts)))
