"""One calibration source, three consumers: NNCF (OpenVINO), ONNX Runtime, TensorRT.

Every int8 path sees the same images, chosen and preprocessed the same way, so int8
artifacts from different backends are comparable. The backend modules are imported
only when their adapter is used: ``nncf`` alone takes seconds to import.

TensorRT int8 goes through explicit quantization: the fp32 ONNX is quantized to QDQ
ONNX with ``OrtCalibrationReader`` and TensorRT builds from the Q/DQ scales, the path
TensorRT 10 recommends (its implicit-calibration ``IInt8Calibrator`` API is
deprecated). ``trt_batches`` is there for a legacy calibrator all the same: it
supplies fixed-size host batches to copy to the device in ``get_batch``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from lightexport.calib.source import ImageFolder
from lightexport.errors import CalibrationError


class BatchStream:
    """A rewindable pull-style stream of NCHW float32 batches, which is what calibrators ask for."""

    def __init__(self, source: ImageFolder, batch_size: int = 1, n: int | None = None, *, drop_last: bool = False):
        self.source, self.batch_size, self.n, self.drop_last = source, batch_size, n, drop_last
        self.shape = (batch_size, *source.preprocess.shape[1:])
        self._rows = len(source.select(n))  # decodes and checks now, before any backend starts
        self.rewind()

    def rewind(self) -> None:
        self._batches = self.source.batches(self.batch_size, self.n, drop_last=self.drop_last)

    def next_batch(self) -> np.ndarray | None:
        """The next batch, or None once the stream is exhausted (the end-of-data signal calibrators expect)."""
        return next(self._batches, None)

    def __len__(self) -> int:
        """Number of batches per pass."""
        full, rest = divmod(self._rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


class OrtCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` without importing it at module load.

    ORT's ABC recognizes any class with a callable ``get_next`` as a subclass, so
    ``isinstance(reader, CalibrationDataReader)`` holds and ``quantize_static`` accepts it.
    """

    def __init__(self, source: ImageFolder, input_name: str, n: int | None = None, batch_size: int = 1,
                 drop_last: bool = False) -> None:
        self.input_name = input_name
        self._stream = BatchStream(source, batch_size, n, drop_last=drop_last)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = self._stream.next_batch()
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._stream.rewind()

    def __len__(self) -> int:
        return len(self._stream)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.get_next, None)


def to_nncf_dataset(source: ImageFolder, n: int | None = None, batch_size: int = 1) -> Any:
    """An ``nncf.Dataset`` over ``n`` selected images, one (batch_size, 3, S, S) array per item.

    The data source is the list of cached uint8 crops, so NNCF's repeated passes
    (statistics, then bias correction) normalize on the fly without decoding again. A model
    with a fixed batch of B needs items of B images; a short last batch is dropped.
    """
    import nncf  # the OpenVINO exporter has required it (with the install hint) before it calibrates
    crops = source.crops(n)
    if batch_size == 1:
        return nncf.Dataset(crops, source.preprocess.normalize)
    if len(crops) < batch_size:
        raise CalibrationError(f"a batch of {batch_size} needs at least {batch_size} images; got {len(crops)}")
    groups = [crops[i:i + batch_size] for i in range(0, len(crops) - len(crops) % batch_size, batch_size)]
    return nncf.Dataset(groups, lambda group: np.concatenate([source.preprocess.normalize(c) for c in group]))


def trt_batches(source: ImageFolder, batch_size: int = 1, n: int | None = None) -> BatchStream:
    """Fixed-size batches for a TensorRT legacy calibrator (a short last batch is dropped: bindings are fixed)."""
    return BatchStream(source, batch_size, n, drop_last=True)
