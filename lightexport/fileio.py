"""Atomic writes: a failed or interrupted export must never leave a half-written artifact.

Outputs are written into a hidden temporary directory beside the destination (same
filesystem, so ``os.replace`` is atomic) under their final file names, and moved into
place only once the whole artifact is complete. Keeping the final names matters for
multi-file artifacts: OpenVINO derives the ``.bin`` name from the ``.xml`` name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightexport.errors import OutputError


def _prepare_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {directory}: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK):
        raise OutputError(f"cannot write to {directory}: permission denied")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield temporary paths (same file names) and move them to ``paths`` if the block succeeds."""
    finals = [Path(p).absolute() for p in paths]
    for final in finals:
        _prepare_dir(final.parent)
        if final.is_dir():
            raise OutputError(f"cannot write {final}: it is a directory")
    staging = Path(tempfile.mkdtemp(prefix=".lightexport-", dir=finals[0].parent))
    try:
        temps = [staging / final.name for final in finals]
        yield temps
        for tmp, final in zip(temps, finals):
            if not tmp.exists():
                raise OutputError(f"internal: {tmp.name} was not written")
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise OutputError(f"cannot write {final}: {exc.strerror}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    with atomic_outputs([path]) as (tmp,):
        yield tmp
