"""lightexport: lightweight vision backbones from PyTorch to verified ONNX, OpenVINO and TensorRT artifacts."""

import logging

__version__ = "0.2.0"

# OpenVINO's and NNCF's PyTorch frontends import torch.utils.cpp_extension, which warns about a
# missing CUDA runtime on every CPU-only machine; that line would precede every one-line error.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

# Before anything of ours can import openvino or nncf: their usage telemetry stays off (see the function).
from lightexport.backends import disable_openvino_telemetry  # noqa: E402

disable_openvino_telemetry()
