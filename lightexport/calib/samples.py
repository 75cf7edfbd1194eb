"""Real photographs without a download: the sample images bundled with scikit-image.

Parity on real photos exercises the value ranges a deployed model sees (noise does
not: it has no edges, textures or saturated regions), and int8 top-1 agreement is only
meaningful on them. scikit-image ships these files inside its wheel, so tests, the
benchmark script and ``lightexport parity`` can use them offline.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from lightexport.errors import BackendUnavailableError

# Natural scenes first: parity takes the first N, and its default N is 8.
PHOTO_NAMES = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field", "camera", "coins",
    "immunohistochemistry", "retina", "moon", "clock", "brick", "grass", "gravel",
)  # fmt: skip


def _skimage_data():
    try:
        import skimage.data
    except ImportError as exc:
        raise BackendUnavailableError(
            "real-photo inputs need scikit-image (its bundled sample photos); install it with: "
            "pip install scikit-image"
        ) from exc
    return skimage.data


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    data = _skimage_data()
    photos = []
    for name in PHOTO_NAMES:
        image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        rgb = np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3])
        rgb.setflags(write=False)  # shared by every caller through the cache
        photos.append(rgb)
    return tuple(photos)


def sample_photos() -> list[np.ndarray]:
    """scikit-image's sample photos as HWC uint8 RGB arrays (grayscale ones replicated to 3 channels)."""
    return list(_photos())


def _rgb(image: np.ndarray) -> np.ndarray:
    rgb = np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3])
    rgb.setflags(write=False)
    return rgb


@functools.lru_cache(maxsize=1)
def _more_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """Natural photos other installed packages ship (matplotlib always, scikit-learn when installed)."""
    found: list[tuple[str, np.ndarray]] = []
    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
            if (folder / name).is_file():
                with Image.open(folder / name) as image:
                    found.append((f"matplotlib:{name}", _rgb(np.asarray(image.convert("RGB")))))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        found += [(f"sklearn:{Path(f).name}", _rgb(img)) for f, img in zip(bunch.filenames, bunch.images)]
    except ImportError:
        pass
    return tuple(found)


def photo_pool() -> list[tuple[str, np.ndarray]]:
    """Every real photo available offline, named: scikit-image's, then matplotlib's and scikit-learn's.

    Decision sets (:mod:`lightexport.calib.crops`) draw augmented crops from this pool; the
    first photos are the same as :func:`sample_photos`, so their order never changes.
    """
    return [*(zip(PHOTO_NAMES, _photos())), *_more_photos()]


def write_sample_photos(folder: str | os.PathLike, suffix: str = ".jpg") -> Path:
    """Write every sample photo into ``folder`` as ``<name><suffix>``: a ready-made calibration folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, pixels in zip(PHOTO_NAMES, _photos()):
        Image.fromarray(pixels).save(folder / f"{name}{suffix}", quality=95)
    return folder
