"""Safe writes: an output never destroys an input, and a failed export never leaves a half-written artifact.

:func:`guard_outputs`, called by every command before any work, refuses an output that is one
of the inputs (a checkpoint, the source artifact, a calibration image), one output that is
another (``-o`` and ``--json``, an IR's ``.bin``), and anything that is not a regular file (a
device node, a FIFO): each was once replaced with exit code 0. Outputs through a symlink are
written to its target. Outputs are written into a hidden temporary directory beside the destination (same
filesystem, so ``os.replace`` is atomic) under their final file names, and moved into
place only once the whole artifact is complete. Keeping the final names matters for
multi-file artifacts: OpenVINO derives the ``.bin`` name from the ``.xml`` name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightexport.errors import OutputError, UsageError

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
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"cannot write in {directory}: it is not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {directory}: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK):
        raise OutputError(f"cannot write to {directory}: permission denied")


def write_target(path: str | os.PathLike) -> Path:
    """Where a write to ``path`` lands: absolute, with a symlink followed to its target (the link itself stays).

    Replacing a symlink with a file would cut it from what it points at (a checkpoint store, a
    shared model folder); writing through it updates the file the user named.
    """
    if not str(path):
        raise UsageError("an output path is empty")
    target = Path(path).absolute()
    if target.is_symlink():
        target = target.resolve()
    return target


def refuse_special(target: Path, role: str = "output") -> None:
    """A usage error when ``target`` exists and is not a regular file: a write replaces it, and a device
    node, FIFO, socket or directory is never lightexport's to replace."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot write {target} ({role}): {exc.strerror}") from exc
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device node" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise UsageError(f"{role} {target} is {kind}; lightexport writes regular files only and will not replace it")


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _probe_writable(directory: Path, role: str) -> None:
    """Create and remove a file in ``directory`` (or its nearest existing ancestor): access() says yes to
    root in /proc, and only a real create tells whether this folder takes files."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {role} in {directory}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-probe-", dir=existing)
    except OSError as exc:
        raise OutputError(f"cannot write {role} in {directory}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)


def guard_outputs(outputs: Sequence[tuple[str, str | os.PathLike]],
                  inputs: Sequence[tuple[str, str | os.PathLike | None]] = ()) -> list[Path]:
    """Refuse, before any work, outputs that would destroy something: the one output guard every writer uses.

    ``outputs`` and ``inputs`` are (role, path) pairs; roles name them in the message
    ("-o/--output", "--json", "--weights"). An output is refused (usage error, exit 2) when it
    is one of the inputs (the same file by path or inode; an input folder's files count), when
    two outputs are the same file, and when it exists but is not a regular file; a folder that
    cannot take files is an output error (exit 6), also before any work. Returns where each
    output will land (symlinks followed).
    """
    landed: list[tuple[str, Path]] = []
    for role, path in outputs:
        target = write_target(path)
        refuse_special(target, role)
        for other_role, other in landed:
            if _same(target, other):
                raise UsageError(f"{role} and {other_role} are the same file ({target}); one would overwrite the "
                                 "other: give them different names")
        landed.append((role, target))
    refuse_inputs(landed, inputs)
    for role, target in landed:
        _probe_writable(target.parent, role)
    return [target for _, target in landed]


def refuse_inputs(outputs: Sequence[tuple[str, Path]], inputs: Sequence[tuple[str, str | os.PathLike | None]]) -> None:
    """A usage error when an output (``(role, write_target(path))``) is one of the inputs or inside an input folder:
    the part of :func:`guard_outputs` a plan uses for the files the command it prints would write."""
    for role, path in inputs:
        if path is None or not str(path):
            continue
        source = Path(path).absolute()
        for out_role, target in outputs:
            inside = source.is_dir() and target.exists() and source.resolve() in target.resolve().parents
            if _same(target, source) or inside:
                what = f"a file inside {role} {source}" if inside else f"{role} ({source})"
                raise UsageError(f"{out_role} {target} is {what}: writing it would destroy an input; "
                                 "choose another output path")


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield temporary paths (same file names) and move them to ``paths`` if the block succeeds.

    The destinations are checked again here (the guard for callers that did not call
    :func:`guard_outputs`): each lands on its symlink's target, none may be a non-regular
    file, and no two may be the same file.
    """
    finals = [write_target(p) for p in paths]
    for i, final in enumerate(finals):
        _prepare_dir(final.parent)
        refuse_special(final)
        if any(_same(final, other) for other in finals[:i]):
            raise UsageError(f"{final} is named twice among the files of one output")
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
                if final.parent != staging.parent:  # a symlink's target in another folder: stage beside it
                    shutil.move(str(tmp), str(final.with_name(f".{final.name}.{os.getpid()}.tmp")))
                    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
                os.replace(tmp, final)
            except OSError as exc:
                raise OutputError(f"cannot write {final}: {exc.strerror}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    with atomic_outputs([path]) as (tmp,):
        yield tmp


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` written atomically to ``path`` (through a symlink to its target)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return write_target(path)
