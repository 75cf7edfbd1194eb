"""fp32 ONNX -> int8 QDQ ONNX with ONNX Runtime's static quantization.

The QDQ form (QuantizeLinear/DequantizeLinear around each quantized op) is what both
ONNX Runtime and TensorRT's explicit-precision path consume. Symmetric int8 for weights
(per channel) and activations is the setting TensorRT requires and ARM CPUs run well.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from lightexport.errors import ExportError

# Ops TensorRT and ORT both run as int8; everything else stays in float between Q/DQ pairs.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool")


def quantize_qdq(model: onnx.ModelProto, reader, *, per_channel: bool = True) -> onnx.ModelProto:
    """Calibrate on ``reader`` (an ORT CalibrationDataReader) and return the QDQ model."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="lightexport-int8-") as work:
        source, prepared, quantized = (Path(work) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, str(source))
        try:
            # The graph is already simplified; pre-processing only adds the shape information the quantizer needs.
            quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
            quantize_static(
                prepared,
                quantized,
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=list(QUANTIZED_OPS),
                calibrate_method=CalibrationMethod.MinMax,
                # Biases stay float: int32 bias DequantizeLinear nodes are rejected by TensorRT's parser.
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        except Exception as exc:
            raise ExportError(f"ONNX Runtime static quantization failed: {str(exc).strip().splitlines()[-1]}") from exc
        return onnx.load(str(quantized))
