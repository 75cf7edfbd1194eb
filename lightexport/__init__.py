"""lightexport: lightweight vision backbones from PyTorch to verified ONNX, OpenVINO and TensorRT artifacts."""

__version__ = "0.1.0"
