"""Deterministic augmented crops of the offline photos: a decision set and a disjoint calibration set.

Eight photos cannot say whether an int8 or bf16 artifact keeps a trained model's decisions:
the question is statistical. Random-resized crops (scale, aspect ratio, horizontal flip, as
in ImageNet training) of the ~20 photos that installed packages ship give hundreds of
inputs with a realistic spread of confidence: a model is sure about a tight crop of a cat
and unsure about a corner of a brick wall. Both sets are fixed by their seed, so every run,
machine and CI job judges the same crops; the calibration set uses another seed stream, so
no evaluation crop is ever one the quantizer calibrated on (a test checks the boxes).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lightexport.calib.samples import photo_pool
from lightexport.errors import UsageError

#: Seed streams: evaluation crops and calibration crops never share a draw.
EVAL_SEED = 2026
CALIB_SEED = 7
#: How many decision crops `lightexport parity --images` and the suite use by default.
DECISION_CROPS = 240
MAX_CROPS = 5000


@dataclass(frozen=True)
class Crop:
    """One crop: which photo, the box (left, top, right, bottom) in its pixels, and whether it is mirrored."""

    photo: str
    box: tuple[int, int, int, int]
    flip: bool

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        left, top, right, bottom = self.box
        out = pixels[top:bottom, left:right]
        return np.ascontiguousarray(out[:, ::-1] if self.flip else out)


def _draw_box(rng: np.random.Generator, width: int, height: int, scale: tuple[float, float],
              ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box rule (area fraction and log-uniform aspect), center crop as fallback."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


@functools.lru_cache(maxsize=8)
def plan_crops(n: int, seed: int, scale: tuple[float, float] = (0.25, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[Crop, ...]:
    """``n`` crops cycling through the photo pool (so every photo is used about equally), drawn from ``seed``."""
    if not 1 <= n <= MAX_CROPS:
        raise UsageError(f"the number of crops must be from 1 to {MAX_CROPS}, got {n}")
    pool = photo_pool()
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        name, pixels = pool[i % len(pool)]
        height, width = pixels.shape[:2]
        crops.append(Crop(name, _draw_box(rng, width, height, scale, ratio), bool(rng.integers(0, 2))))
    return tuple(crops)


def crop_pixels(crops: tuple[Crop, ...]) -> list[np.ndarray]:
    """The HWC uint8 pixels of each crop (before the model's resize and center crop)."""
    pool = dict(photo_pool())
    return [crop.apply(pool[crop.photo]) for crop in crops]


def decision_crops(n: int = DECISION_CROPS) -> list[np.ndarray]:
    """The evaluation set: ``n`` augmented crops, disjoint from :func:`calibration_crops`."""
    return crop_pixels(plan_crops(n, EVAL_SEED))


def calibration_crops(n: int) -> list[np.ndarray]:
    """``n`` augmented crops for int8 calibration, from a seed stream the decision set never uses."""
    return crop_pixels(plan_crops(n, CALIB_SEED))


def write_calibration_crops(folder: str | os.PathLike, n: int = 300) -> Path:
    """Write ``n`` calibration crops into ``folder`` as PNG files: a ready-made calibration folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(calibration_crops(n)):
        Image.fromarray(pixels).save(folder / f"crop_{i:04d}.png")
    return folder
