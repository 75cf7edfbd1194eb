"""What native code writes to the process's file descriptors, kept off the user's terminal and, where it explains
a failure, put into lightexport's one line.

C++ runtimes print past Python's ``sys.stdout``/``sys.stderr``, straight to fds 1 and 2: banners (MNN's "The device
supports: ..."), logs (ExecuTorch's cpuinfo probes, LiteRT's "Created TensorFlow Lite XNNPACK delegate"), and the only
reason a load failed (ncnn's "layer Poolinq not exists or registered", MNN's "Invalidate buffer to create
interpreter"). :func:`captured` points the fds at a temporary file for a block and hands the text back.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

#: at most this much of what native code wrote is read back (a runtime may log a line per layer)
MAX_CAPTURED = 64 * 1024


@dataclass
class Captured:
    """What the fds received inside :func:`captured`; filled when the block ends."""

    text: str = ""

    def reason(self) -> str:
        """The last non-empty line (where a native library says why it gave up), or ``""``."""
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""


@contextlib.contextmanager
def captured(*fds: int) -> Iterator[Captured]:
    """Point ``fds`` (1: stdout, 2: stderr) at one temporary file for the block; restore them after, even on error."""
    sys.stdout.flush()
    sys.stderr.flush()
    result = Captured()
    saved = [os.dup(fd) for fd in fds]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield result
        finally:
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            result.text = sink.read(MAX_CAPTURED).decode("utf-8", "replace")
