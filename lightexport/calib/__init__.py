"""Calibration data shared by every int8 path: image folders, the model's preprocessing, backend adapters."""

from lightexport.calib.adapters import BatchStream, OrtCalibrationReader, to_nncf_dataset, trt_batches
from lightexport.calib.preprocess import Preprocess, UnreadableImageError, load_image, to_rgb
from lightexport.calib.samples import sample_photos, write_sample_photos
from lightexport.calib.source import EXTENSIONS, CalibrationWarning, ImageFolder

__all__ = [
    "EXTENSIONS",
    "BatchStream",
    "CalibrationWarning",
    "ImageFolder",
    "OrtCalibrationReader",
    "Preprocess",
    "UnreadableImageError",
    "load_image",
    "sample_photos",
    "to_nncf_dataset",
    "to_rgb",
    "trt_batches",
    "write_sample_photos",
]
