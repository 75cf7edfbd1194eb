"""Native output is captured at the file descriptors, handed back, and the descriptors restored even on error."""

import os

import pytest

from lightexport.nativeio import MAX_CAPTURED, captured


def test_what_native_code_writes_is_captured_not_shown(capfd):
    with captured(1, 2) as said:
        os.write(1, b"The device supports: i8sdot:0\n")
        os.write(2, b"layer Poolinq not exists or registered\n")
    assert "The device supports" in said.text and said.reason() == "layer Poolinq not exists or registered"
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""


def test_descriptors_come_back_after_an_error(capfd):
    with pytest.raises(RuntimeError), captured(2):
        os.write(2, b"x" * (MAX_CAPTURED + 10))
        raise RuntimeError("load failed")
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"
