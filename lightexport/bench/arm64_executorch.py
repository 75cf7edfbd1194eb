"""ExecuTorch in the emulated arm64 worker: its own aarch64 runtime libraries, driven through a small C library.

ExecuTorch's Python runtime (``executorch.extension.pybindings``) links libtorch, and no aarch64
PyTorch on the package registry loads beside executorch 1.5.1: 2.9.1 lacks a symbol it needs,
2.10's CPU build loads programs and fails every ``execute`` with "tensor does not have a device",
and 2.11 and newer are CUDA builds of several GB. The runtime itself needs no PyTorch: the aarch64
wheel's ``lib/libexecutorch*.so`` (program loader, XNNPACK delegate, optimized and quantized
kernels, thread pool) is what an app links on a phone. So the set-up takes those libraries and
their headers out of the wheel (``pip download --no-deps``: no torch comes with it), fetches Debian's
aarch64 cross compiler into the cache (:func:`lightexport.bench.arm64.cross_compiler`: nothing is
installed), and builds ``executorch_native.cpp`` into ``libexecutorch_native.so`` beside them; the
worker's runner loads it with ctypes (:mod:`lightexport.parity.runners.executorch_native`). About
60 MB fetched and 5 s of compiling, once per ExecuTorch version; a failure (no Debian archive, say)
does not stop the arm64 profile: its ExecuTorch cells report the reason.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from lightexport.bench.arm64 import CROSS_PACKAGES, PLATFORMS, cross_compiler, run_tool
from lightexport.errors import BackendUnavailableError
from lightexport.parity.runners.executorch_native import LIBRARY_ENV, UNAVAILABLE_ENV

SOURCE = Path(__file__).with_name("executorch_native.cpp")
LIBRARY = "libexecutorch_native.so"
#: the wheel's runtime libraries the C library links (the delegate and kernels register themselves when loaded)
LINKED = ("executorch", "executorch_backend_xnnpack", "executorch_kernels_optimized", "executorch_kernels_quantized",
          "executorch_threadpool")
#: torch's generated build-macro header, which ExecuTorch's copy of c10's header-only part includes but the wheel
#: lacks; none of its macros matter to the portable types
CMAKE_MACROS = "torch/headeronly/macros/cmake_macros.h"


def setup(base: Path, step: Callable[[str], None]) -> dict[str, str]:
    """The worker's environment: where the built library is, or why there is none (never raises for that)."""
    try:
        version = importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        return {UNAVAILABLE_ENV: "ExecuTorch is not installed on the host"}
    key = hashlib.sha256(f"{version} {' '.join(CROSS_PACKAGES)}".encode() + SOURCE.read_bytes()).hexdigest()[:12]
    folder = base / f"executorch-{version}-{key}"
    library = folder / "lib" / LIBRARY
    if not library.is_file():
        try:
            _build(folder, version, step)
        except BackendUnavailableError as exc:
            return {UNAVAILABLE_ENV: str(exc)}
    return {LIBRARY_ENV: str(library)}


def _build(folder: Path, version: str, step: Callable[[str], None]) -> None:
    compiler, env = cross_compiler(step)
    work = Path(tempfile.mkdtemp(prefix="executorch-", dir=folder.parent))
    try:
        step(f"arm64 set-up: ExecuTorch {version}'s aarch64 runtime libraries (its wheel, without dependencies)")
        wheels = work / "wheel"
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        run_tool([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
              "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp",
              "-d", str(wheels), f"executorch=={version}"], "pip download of the aarch64 executorch wheel")
        staged = work / "out"
        _extract(next(wheels.glob("*.whl")), staged)
        stand_in = staged / "include" / CMAKE_MACROS
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("/* stand-in for torch's generated header: the portable c10 types use none of it */\n")
        include = staged / "include"
        step(f"arm64 set-up: building {LIBRARY} with the aarch64 cross compiler")
        run_tool([*compiler, "-O2", "-w", "-std=c++17", "-shared", "-fPIC", "-I", str(include),
              "-I", str(include / "executorch/runtime/core/portable_type/c10"), str(SOURCE),
              "-o", str(staged / "lib" / LIBRARY), "-L", str(staged / "lib"), "-Wl,--no-as-needed",
              *(f"-l{name}" for name in LINKED), "-Wl,-rpath,$ORIGIN"],
             f"compiling {SOURCE.name}", env=env)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staged, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract(wheel: Path, into: Path) -> None:
    """The wheel's runtime libraries (``executorch/lib/*.so``) and headers (``executorch/include/``), nothing else."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            for prefix, target in (("executorch/lib/", "lib"), ("executorch/include/", "include")):
                name = member.removeprefix(prefix)
                if member.startswith(prefix) and name and not member.endswith("/") and ".." not in Path(name).parts \
                        and (target == "include" or name.endswith(".so") and "/" not in name):
                    path = into / target / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(archive.read(member))
    if not (into / "lib" / "libexecutorch.so").is_file():
        raise BackendUnavailableError(f"{wheel.name} has no lib/libexecutorch.so to run programs with")

