"""Atomic writes: a failed or interrupted export must never leave a half-written artifact.

Outputs are written into a hidden temporary directory beside the destination (same
filesystem, so ``os.replace`` is atomic) under their final file names, and moved into
place only once the whole artifact is complete. Keeping the final names matters for
multi-file artifacts: OpenVINO derives the ``.bin`` name from the ``.xml`` name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightexport.errors import OutputError

#: Staging folders are named after the process that owns them, so an abandoned one can be proven abandoned.
STAGING_PREFIX = ".lightexport-"
#: errno values that mean "the destination cannot take this file", not "the export is broken"
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
#: Below this much free space a failed write is blamed on the disk (runtimes that write through C++
#: streams report a full disk as "basic_ios::clear: iostream error", with no errno).
LOW_SPACE_BYTES = 64 << 20


def output_failure(exc: BaseException, path: Path) -> OutputError | None:
    """An ``OutputError`` naming the cause when ``exc`` came from the destination (full, read-only); else None."""
    if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
        return OutputError(f"cannot write {path}: {exc.strerror or os.strerror(exc.errno)}")
    try:
        free = shutil.disk_usage(path.parent if not path.is_dir() else path).free
    except OSError:
        return None
    if free < LOW_SPACE_BYTES:
        return OutputError(f"cannot write {path}: only {free / 2**20:.1f} MiB free on its file system (disk full)")
    return None


def _pid_of(staging: Path) -> int | None:
    parts = staging.name[len(STAGING_PREFIX):].split("-", 1)
    return int(parts[0]) if parts and parts[0].isdigit() else None


def remove_abandoned_staging(directory: Path) -> None:
    """Delete staging folders whose owning process no longer exists (killed runs: SIGKILL, power loss).

    A folder is only removed when its name carries a pid and that pid is not running on this
    machine; folders of live processes, and old-style names without a pid, are left alone.
    """
    try:
        candidates = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(STAGING_PREFIX)]
    except OSError:
        return
    for staging in candidates:
        pid = _pid_of(staging)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue  # exists but not ours (EPERM): alive


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
    remove_abandoned_staging(finals[0].parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=finals[0].parent))
    except OSError as exc:
        raise OutputError(f"cannot write in {finals[0].parent}: {exc.strerror}") from exc
    try:
        temps = [staging / final.name for final in finals]
        try:
            yield temps
        except OSError as exc:
            failure = output_failure(exc, finals[0])
            if failure is not None:
                raise failure from exc
            raise
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
