"""Calibration images from a folder, chosen deterministically and checked before use.

Selection is a seeded random subset (then put back in path order), not the first N
sorted paths: ImageNet-style folders are sorted by class, and the first N images of
such a folder would all come from one or two classes. The same folder, N and seed
always give the same images, on any filesystem, because paths are sorted by their
POSIX form relative to the root before the draw.

Unreadable files are skipped with a ``CalibrationWarning`` and replaced by the next
images of the same seeded order; the folder only fails when too few readable images
remain. Every chosen image is decoded once, during selection, and kept as its uint8
center crop, so a corrupt file is reported up front (not from inside NNCF or ONNX
Runtime, which would wrap the error) and calibration passes do not decode again.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lightexport.calib.preprocess import Preprocess, UnreadableImageError
from lightexport.errors import CalibrationError, UsageError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_MAX_NAMED = 5  # files named in one message; the rest are counted
#: Images smaller than this on a side are used but warned about (a 1x1 image calibrates on one colour).
MIN_SIDE = 32


def _header_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001  # decoded fine a moment ago; the size is only for a warning
        return None


class CalibrationWarning(UserWarning):
    """Some calibration images were skipped; calibration went on without them."""


def _name_some(items: list[str]) -> str:
    more = f", and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else ""
    return ", ".join(items[:_MAX_NAMED]) + more


class ImageFolder:
    """Images under ``root`` (``.jpg .jpeg .png .webp .bmp``, any case), hidden files and folders ignored.

    ``preprocess`` defaults to the registry's default transform (ImageNet mean/std at 224);
    exporters pass the one of the model they quantize.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        preprocess: Preprocess | None = None,
        *,
        recursive: bool = True,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.preprocess = preprocess or Preprocess()
        self.recursive = recursive
        self.seed = seed
        self.paths = self._scan()
        self.skipped: dict[Path, str] = {}  # unreadable file -> why
        self._crops: dict[Path, np.ndarray] = {}

    def _walk(self) -> tuple[list[Path], list[Path]]:
        """(files, entries that cannot be read): symlinked sub-folders followed once each, hidden ones skipped.

        ``rglob`` does not follow symlinked folders, so a calibration set assembled from links to
        class folders was silently missed; a link cycle is cut where a folder repeats.
        """
        files, broken, seen = [], [], set()
        for top, dirs, names in os.walk(self.root, followlinks=True):
            real = os.path.realpath(top)
            if real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if self.recursive else []
            for name in names:
                if name.startswith("."):
                    continue
                path = Path(top) / name
                (files if path.is_file() else broken).append(path)
        return files, broken

    def _scan(self) -> list[Path]:
        if not self.root.exists():
            raise CalibrationError(f"calibration folder {self.root} does not exist")
        if not self.root.is_dir():
            raise CalibrationError(f"calibration source {self.root} is not a folder")
        try:
            found, broken = self._walk()
        except OSError as exc:
            raise CalibrationError(f"cannot list calibration folder {self.root}: {exc.strerror}") from exc
        images = sorted((p for p in found if p.suffix.lower() in EXTENSIONS), key=self._key)
        if broken:
            warnings.warn(f"{len(broken)} entries of {self.root} cannot be read (broken or looping symlinks, or "
                          f"not files): {_name_some(sorted(self._key(p) for p in broken))}", CalibrationWarning,
                          stacklevel=3)
        if not images:
            where = " and its subfolders" if self.recursive else ""
            others = sorted(self._key(p) for p in found)
            held = f"; it holds {len(others)} other file(s): {_name_some(others)}" if others else (
                f"; its {len(broken)} entries cannot be read" if broken else "; it is empty")
            looked = f"looked for {' '.join(EXTENSIONS)}, any case"
            raise CalibrationError(f"no images in calibration folder {self.root}{where} ({looked}){held}")
        return images

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, n: int | None = None) -> list[Path]:
        """``n`` readable images (all readable ones when None), in path order; decodes and caches each one.

        Raises ``CalibrationError`` when the folder holds fewer than ``n`` images, or fewer
        than ``n`` readable ones (naming the unreadable files), or none readable at all.
        """
        want_all = n is None
        n = len(self.paths) if n is None else n
        if n < 1:
            raise UsageError(f"the calibration size must be at least 1 (got {n})")
        if n > len(self.paths):
            # Asking for the default 300 from a folder of 64 is not a mistake worth stopping for: use them all.
            warnings.warn(f"--calib-size asks for {n} images but {self.root} holds {len(self.paths)}; "
                          f"calibrating on those {len(self.paths)}", CalibrationWarning, stacklevel=2)
            n, want_all = len(self.paths), True
        chosen, newly_skipped, tiny = [], [], []
        for index in np.random.default_rng(self.seed).permutation(len(self.paths)):
            path = self.paths[index]
            if path in self.skipped:
                continue
            if path not in self._crops:
                try:
                    self._crops[path] = self.preprocess.crop(path)
                except UnreadableImageError as exc:
                    self.skipped[path] = exc.reason
                    newly_skipped.append(path)
                    continue
                size = _header_size(path)
                if size and min(size) < MIN_SIDE:
                    tiny.append(f"{self._key(path)} ({size[0]}x{size[1]})")
            chosen.append(int(index))
            if len(chosen) == n:
                break
        if tiny:
            warnings.warn(f"{len(tiny)} calibration image(s) are smaller than {MIN_SIDE} px on a side and were "
                          f"upscaled to {self.preprocess.input_size} px, which no deployed camera frame looks like: "
                          f"{_name_some(tiny)}", CalibrationWarning, stacklevel=2)
        if newly_skipped:
            warnings.warn(
                f"skipped {len(newly_skipped)} unreadable image(s) in {self.root}: {self._describe(newly_skipped)}",
                CalibrationWarning,
                stacklevel=2,
            )
        if len(chosen) < (1 if want_all else n):
            readable = len(self.paths) - len(self.skipped)
            wanted = "at least one readable image" if want_all else f"{n} images (--calib-size)"
            raise CalibrationError(
                f"calibration needs {wanted} but only {readable} of the {len(self.paths)} in {self.root} are "
                f"readable; unreadable: {self._describe(list(self.skipped))}"
            )
        return [self.paths[i] for i in sorted(chosen)]

    def _describe(self, paths: list[Path]) -> str:
        return _name_some([f"{self._key(p)} ({self.skipped[p]})" for p in paths])

    def crops(self, n: int | None = None) -> list[np.ndarray]:
        """The selected images as HWC uint8 center crops (cheap to keep; normalize with ``preprocess``)."""
        return [self._crops[p] for p in self.select(n)]

    def batches(self, batch_size: int = 1, n: int | None = None, *, drop_last: bool = False) -> Iterator[np.ndarray]:
        """NCHW float32 batches of the selected images; ``drop_last`` for runtimes with a fixed batch."""
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1 (got {batch_size})")
        crops = self.crops(n)
        if drop_last and len(crops) < batch_size:
            raise CalibrationError(f"a batch of {batch_size} needs at least {batch_size} images; got {len(crops)}")
        stop = len(crops) - len(crops) % batch_size if drop_last else len(crops)
        # a generator expression, not a generator function: selection errors surface at the call
        return (
            np.concatenate([self.preprocess.normalize(c) for c in crops[start : start + batch_size]])
            for start in range(0, stop, batch_size)
        )
