"""The CPU facts exporters depend on: which x86 int8 kernels saturate int16."""

import pytest

from lightexport.cpu import cpu_description, int8_saturates


@pytest.mark.parametrize(("flags", "saturates"), [
    (["avx2", "fma"], True),                         # AVX2 only: vpmaddubsw adds pairs in saturating int16
    (["avx2", "avx512f"], True),                     # AVX-512 without VNNI: the same instruction, wider
    (["avx2", "avx512f", "avx512_vnni"], False),     # vpdpbusd accumulates in int32
    (["avx2", "avx_vnni"], False),                   # AVX-VNNI (Alder Lake and later)
    (["avx2", "amx_int8"], False),
    (["asimd", "asimddp"], False),                   # ARM: dot products widen
    ([], False),
])
def test_int8_saturation_follows_the_dot_product_instructions(flags, saturates):
    assert int8_saturates(flags) is saturates


def test_this_machine_is_described():
    name, flags = cpu_description()
    assert name and flags == sorted(flags)
    assert int8_saturates() is int8_saturates(flags)


@pytest.mark.parametrize(("backend", "precision", "record", "saturates", "said"), [
    ("onnx", "int8", '{"weight_bits": 8}', True, True),
    ("onnx", "int8", None, True, True),                                     # not made by lightexport here
    ("openvino", "int8", '{"weight_bits": "8, 7 in the first layer"}', True, True),
    ("onnx", "int8", '{"weight_bits": 7}', True, False),                    # 7-bit: nothing saturates
    ("openvino", "int8", '{"weight_bits": "7"}', True, False),
    ("onnx", "int8", "not json", True, True),
    ("onnx", "int8", '{"weight_bits": 8}', False, False),                   # VNNI: the file is to blame
    ("onnx", "fp32", None, True, False),
    ("tflite", "int8", None, True, False),                                  # XNNPACK: its own kernels
    ("onnx", "int8", '{"activations": "int8 symmetric", "weight_bits": 8}', True, True),  # TensorRT's form
])
def test_a_failing_int8_artifact_on_a_saturating_cpu_names_the_cpu(monkeypatch, backend, precision, record,
                                                                   saturates, said):
    import lightexport.cpu
    from lightexport.backends import get_backend
    from lightexport.parity.settings import machine_caveat
    from lightexport.precision import Precision

    monkeypatch.setattr(lightexport.cpu, "int8_saturates", lambda flags=None: saturates)
    caveat = machine_caveat(get_backend(backend), Precision.parse(precision), record)
    assert (caveat is not None) is said
    if said:
        assert "AVX2 but no VNNI" in caveat
        assert ("judge it in TensorRT" in caveat) if record and "symmetric" in record else "7-bit weights" in caveat


def test_the_label_names_the_cpu_and_its_flags():
    from lightexport.cpu import cpu_label

    name, flags = cpu_description()
    assert cpu_label().startswith(name) and all(f in cpu_label() for f in flags)
