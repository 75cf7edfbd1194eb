"""Turn an image into exactly the tensor a model was trained to see.

Calibration statistics and parity inputs are only meaningful if they go through the
model's own evaluation transform, so this mirrors the timm/torchvision eval pipeline
(PIL decode, RGB, resize shorter side, center crop, [0, 1], mean/std, NCHW) with the
numbers taken from the registry entry. Resizing uses PIL with antialiasing, as
torchvision does for PIL images, so crops match torchvision's eval transform.

The work is split in two: ``crop`` (decode, resize, crop: the expensive part, giving
uint8 pixels that are 4x smaller than float32) and ``normalize`` (cheap). Calibration
sources cache crops and normalize on the fly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from lightexport.errors import CalibrationError, UsageError
from lightexport.model_defs.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

ImageLike = Image.Image | np.ndarray | str | os.PathLike

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# What PIL raises for a file that is not an image, is truncated or is absurdly large.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImageError(CalibrationError):
    """One image file that cannot be decoded; folders skip these and count them."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = path, reason


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB, the way ImageNet-style training loaders see it.

    Alpha is dropped rather than composited, as ``convert('RGB')`` does in timm and
    torchvision loaders; palette images with transparency go through RGBA first so PIL
    does not warn. 16-bit grayscale is rescaled, since ``convert`` would clip it.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
    return image.convert("RGB")


#: Bounds checked from the header, before a pixel is decoded: a 143-byte PNG can declare 20000x1
#: pixels, which resizing to a 256-pixel shorter side turns into a 5120000x256 image (6 GB).
#: 100 megapixels is above any camera's photos; 50:1 is beyond the widest panoramas.
MAX_PIXELS = 100_000_000
MAX_ASPECT = 50


def check_dimensions(width: int, height: int) -> str | None:
    """Why an image of this size cannot be preprocessed within bounded memory, or None when it can."""
    if width < 1 or height < 1:
        return f"it has no pixels ({width}x{height})"
    if width * height > MAX_PIXELS:
        return f"{width}x{height} is over {MAX_PIXELS // 1_000_000} megapixels"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return f"{width}x{height} is more than {MAX_ASPECT}:1, too thin to resize"
    return None


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` completely, so a truncated file fails here rather than halfway through calibration."""
    try:
        with Image.open(path) as image:
            too_big = check_dimensions(*image.size)  # from the header: nothing decoded yet
            if too_big:
                raise UnreadableImageError(path, too_big)
            return to_rgb(image.copy())  # copy() decodes everything and outlives the closed file
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(path, "not a recognizable image") from exc
    except _DECODE_ERRORS as exc:
        raise UnreadableImageError(path, str(exc) or type(exc).__name__) from exc


@dataclass(frozen=True)
class Preprocess:
    """A model's evaluation transform as data; ``Preprocess()`` is the registry's default (ImageNet, 224)."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    #: bicubic is what timm and the official FasterNet code evaluate with; torchvision's models use bilinear
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.input_size < 1 or not 0 < self.crop_pct <= 1:
            raise UsageError(f"need input_size >= 1 and 0 < crop_pct <= 1 (got {self.input_size}, {self.crop_pct})")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {self.interpolation!r}")

    @classmethod
    def from_spec(cls, spec: ModelSpec, input_size: int | None = None) -> Preprocess:
        """The registry entry's transform; ``input_size`` overrides it for artifacts exported at another size."""
        return cls(input_size or spec.input_size, tuple(spec.mean), tuple(spec.std), spec.crop_pct, spec.interpolation)

    @property
    def resize_size(self) -> int:
        """Shorter side before cropping, keeping ``crop_pct`` of it; floored as timm does (248 at 224/0.9)."""
        return math.floor(self.input_size / self.crop_pct)

    @property
    def value_range(self) -> tuple[float, float]:
        """The lowest and highest value :meth:`normalize` can produce (pixel 0 and 255 through each channel's
        mean and std): the range an int8 quantizer of the model's input needs to clip nothing a camera can give."""
        ends = np.array([[0.0], [1.0]], np.float32)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        values = (ends - mean) / std
        return float(values.min()), float(values.max())

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.input_size, self.input_size)

    def crop(self, image: ImageLike) -> np.ndarray:
        """Decode, resize the shorter side to ``resize_size`` and center-crop: HWC uint8 RGB.

        Integer rounding follows torchvision (long side truncated, crop offset rounded);
        the crop always fits because ``resize_size >= input_size``.
        """
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        elif not isinstance(image, Image.Image):
            image = load_image(image)
        too_big = check_dimensions(*image.size)
        if too_big:
            raise CalibrationError(f"cannot preprocess an image of {too_big}")
        image = to_rgb(image)
        w, h = image.size
        short, long = min(w, h), max(w, h)
        new_long = int(self.resize_size * long / short)
        size = (self.resize_size, new_long) if w <= h else (new_long, self.resize_size)
        if size != image.size:
            image = image.resize(size, INTERPOLATIONS[self.interpolation])
        s = self.input_size
        left, top = int(round((size[0] - s) / 2.0)), int(round((size[1] - s) / 2.0))
        return np.asarray(image.crop((left, top, left + s, top + s)), dtype=np.uint8)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """HWC uint8 crop -> (1, 3, S, S) float32 in the model's normalized space."""
        scaled = pixels.astype(np.float32) / np.float32(255.0)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1)[None])

    def __call__(self, image: ImageLike) -> np.ndarray:
        """One image (file, PIL image, or HWC/HW uint8 array) -> a (1, 3, S, S) float32 batch."""
        return self.normalize(self.crop(image))
