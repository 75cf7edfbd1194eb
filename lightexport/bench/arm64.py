"""An aarch64 Python under user-mode emulation, so the suite can judge ARM kernels on an x86 machine.

ONNX Runtime's MLAS and OpenVINO's CPU plugin run other kernels on ARM (NEON, dot-product int8,
fp16 arithmetic), with other rounding and fusion; their numerics are what an arm64 profile checks.
The environment is built once and cached (``LIGHTEXPORT_ARM64_DIR``, default
``~/.cache/lightexport/arm64``) from what this project can reach: Debian's arm64 packages
(a sysroot holding python3.11 and its libraries, unpacked with ``dpkg-deb -x`` and fetched with
an apt state private to the cache, so the system's apt configuration is never changed) and the
aarch64 wheels of the runtimes, installed on the host by pip for another platform. The emulator
is Debian's ``qemu-aarch64-static``, called directly (no binfmt registration needed).

Two files in the sysroot make recent runtimes start under qemu 7.2, whose linux-user mode passes
the x86 host's ``/proc/cpuinfo`` through to the guest: pytorch/cpuinfo (inside ONNX Runtime >= 1.20)
finds no ARM processor there and dereferences NULL on import (the SIGSEGV), and OpenVINO >= 2025
reads ``/sys/devices/system/cpu/cpu*/regs/identification/midr_el1`` and stops with SIGILL without
it. qemu resolves absolute paths inside the ``-L`` root first, so an ARM ``/proc/cpuinfo`` and MIDR
files there, describing the emulated core (a Cortex-A76: NEON, dot-product, fp16 arithmetic), fix
both; the ISA features themselves come from the emulated CPU model's HWCAPs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightexport
from lightexport.errors import BackendUnavailableError

#: Debian arm64 packages making a sysroot in which python3.11 and the runtimes' wheels load.
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1", "libffi8",
    "libssl3", "libbz2-1.0", "liblzma5", "libstdc++6", "libgcc-s1", "libgomp1", "libuuid1", "libsqlite3-0",
    "libncursesw6", "libtinfo6", "libreadline8", "libcrypt1",
)
#: Debian's aarch64 cross compiler (host packages; the -cross ones hold the aarch64 libc and libstdc++ it links
#: against) and the host libraries its cc1plus needs, for native pieces built against a wheel's libraries.
CROSS_PACKAGES = (
    "g++-12-aarch64-linux-gnu", "gcc-12-aarch64-linux-gnu", "cpp-12-aarch64-linux-gnu", "gcc-12-aarch64-linux-gnu-base",
    "binutils-aarch64-linux-gnu", "libstdc++-12-dev-arm64-cross", "libgcc-12-dev-arm64-cross", "libc6-dev-arm64-cross",
    "linux-libc-dev-arm64-cross", "libc6-arm64-cross", "libgcc-s1-arm64-cross", "libstdc++6-arm64-cross",
    "libatomic1-arm64-cross", "libisl23", "libmpc3", "libmpfr6", "libgmp10",
)
CROSS_CXX = "aarch64-linux-gnu-g++-12"
#: The emulated core: a Cortex-A76 (Raspberry Pi 5, Snapdragon 855-class big cores), ARMv8.2 with dot-product.
CPU_MODEL = "cortex-a76"
MIDR = "0x00000000414fd0b1"  # implementer 0x41 (Arm), variant 4, part 0xd0b (Cortex-A76), revision 1
CPU_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"

def runtime_wheels() -> tuple[str, ...]:
    """The aarch64 wheels of every format that runs there (the records' ``aarch64_wheels``), at the host's
    versions, so x86 and ARM differ in kernels only."""
    from lightexport.backends import BACKENDS

    return tuple(dict.fromkeys(w for b in BACKENDS.values() for w in b.aarch64_wheels))


def emulated_runtimes() -> tuple[str, ...]:
    """The runtimes the emulated Python has, through their wheels or a native set-up of their own (torch-fused is not
    one: it has no PyTorch)."""
    from lightexport.backends import BACKENDS

    return tuple(b.runtime for b in BACKENDS.values() if b.aarch64_wheels or b.aarch64_setup)
#: Other wheels the worker imports (numpy for arrays, rich for parity reports), also at the host's versions.
SUPPORT = ("numpy", "rich")
PLATFORMS = tuple(f"manylinux_2_{v}_aarch64" for v in (17, 27, 28, 31, 34, 35, 36)) + ("manylinux2014_aarch64",)
PYTHON = "usr/bin/python3.11"


@dataclass(frozen=True)
class Emulator:
    """How to start a Python in the emulated environment: a command prefix and environment variables."""

    command: list[str]
    env: dict[str, str]
    versions: dict[str, str]


def cache_dir() -> Path:
    return Path(os.environ.get("LIGHTEXPORT_ARM64_DIR") or Path.home() / ".cache" / "lightexport" / "arm64")


def find_qemu() -> str:
    """The user-mode emulator (``LIGHTEXPORT_QEMU`` overrides); a one-line install hint when there is none."""
    given = os.environ.get("LIGHTEXPORT_QEMU")
    found = given if given and shutil.which(given) else shutil.which("qemu-aarch64-static") or shutil.which(
        "qemu-aarch64")
    if not found:
        raise BackendUnavailableError("the arm64 profiles need qemu-aarch64-static; install it with: "
                                      "apt-get install qemu-user-static (Debian/Ubuntu)")
    return found


def wanted_versions() -> dict[str, str]:
    """Each wheel at the version installed on the host; a runtime the host lacks is left out."""
    versions = {}
    for name in (*runtime_wheels(), *SUPPORT):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name in SUPPORT:
                raise BackendUnavailableError(f"the arm64 profiles need {name} on the host: pip install {name}") \
                    from None
    return versions


def run_tool(args: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run one set-up tool; its failure is one line naming the step and the tool's last words."""
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise BackendUnavailableError(f"cannot set up the arm64 environment: {args[0]} not found ({what})") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        raise BackendUnavailableError(f"cannot set up the arm64 environment ({what}): "
                                      f"{lines[-1].strip() if lines else f'exit {done.returncode}'}")


def _fetch_debs(packages: tuple[str, ...], arch: str, into: Path, steps: tuple[str, str],
                step: Callable[[str], None]) -> None:
    """Debian packages for ``arch``, fetched with an apt state private to the cache (the system's sources, never its
    state or architectures) and unpacked into ``into`` (replaced whole, so a failed fetch leaves the old one)."""
    work = Path(tempfile.mkdtemp(prefix="debs-", dir=into.parent))
    try:
        state = work / "apt"
        for d in ("lists/partial", "cache/archives/partial"):
            (state / d).mkdir(parents=True)
        (state / "status").touch()
        apt = ["apt-get", "-q", "-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures::={arch}",
               "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::State::status={state / 'status'}",
               "-o", f"Dir::Cache={state / 'cache'}", "-o", "Debug::NoLocking=1"]
        step(steps[0])
        run_tool([*apt, "update"], f"apt-get update for {arch}")
        debs = work / "debs"
        debs.mkdir()
        step(steps[1])
        run_tool([*apt, "download", *(f"{p}:{arch}" for p in packages)], "apt-get download", cwd=debs)
        staged = work / "root"
        for deb in sorted(debs.glob("*.deb")):
            run_tool(["dpkg-deb", "-x", str(deb), str(staged)], f"dpkg-deb -x {deb.name}")
        if into.exists():
            shutil.rmtree(into)
        os.replace(staged, into)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_sysroot(root: Path, step: Callable[[str], None]) -> None:
    """Debian's arm64 packages, fetched with a private apt state and unpacked into ``root``."""
    _fetch_debs(DEBIAN_PACKAGES, "arm64", root, (
        "arm64 set-up 1/3: reading Debian's arm64 package lists (apt-get update, private state)",
        f"arm64 set-up 2/3: downloading and unpacking {len(DEBIAN_PACKAGES)} Debian arm64 packages"), step)
    if not (root / PYTHON).is_file():
        raise BackendUnavailableError(f"cannot set up the arm64 environment: no {PYTHON} in Debian's packages")


def cross_compiler(step: Callable[[str], None]) -> tuple[list[str], dict[str, str]]:
    """Debian's aarch64 C++ cross compiler, unpacked into the cache on first use (nothing is installed): the command
    (with its own libraries and headers as the sysroot) and the environment it runs in. For runtimes whose wheel
    ships native libraries but whose Python layer cannot load in the emulated Python (ExecuTorch's needs PyTorch)."""
    base = cache_dir()
    root = base / "cross"
    marker = root / ".lightexport-packages"
    if not (marker.is_file() and marker.read_text() == " ".join(CROSS_PACKAGES)):
        host = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
        if not host:
            raise BackendUnavailableError("cannot fetch the aarch64 cross compiler: dpkg is not available here")
        _fetch_debs(CROSS_PACKAGES, host, root, (
            f"arm64 set-up: reading Debian's {host} package lists for the aarch64 cross compiler",
            f"arm64 set-up: downloading and unpacking Debian's aarch64 cross compiler ({len(CROSS_PACKAGES)} "
            "packages, about 50 MB)"), step)
        _write_if_changed(marker, " ".join(CROSS_PACKAGES))
    compiler = root / "usr" / "bin" / CROSS_CXX
    if not compiler.is_file():
        raise BackendUnavailableError(f"cannot set up the aarch64 cross compiler: no {compiler.name} in its packages")
    libraries = os.pathsep.join(str(d) for d in sorted((root / "usr" / "lib").glob("*-linux-gnu")) if d.is_dir())
    return [str(compiler), f"--sysroot={root}"], {"LD_LIBRARY_PATH": libraries}


def _install_wheels(site: Path, versions: dict[str, str], step: Callable[[str], None]) -> None:
    pins = [f"{name}=={version}" for name, version in versions.items()]
    step(f"arm64 set-up 3/3: installing aarch64 wheels {', '.join(pins)}")
    staged = Path(tempfile.mkdtemp(prefix="site-", dir=site.parent))
    try:
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        run_tool([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
              "--target", str(staged), *platforms, "--python-version", "3.11", "--implementation", "cp",
              "--only-binary=:all:", *pins], "pip install of aarch64 wheels")
        if site.exists():
            shutil.rmtree(site)
        os.replace(staged, site)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _describe_cpu(root: Path) -> None:
    """ARM ``/proc/cpuinfo`` and MIDR files inside the sysroot, one entry per host CPU (see the module doc)."""
    count = os.cpu_count() or 1
    possible = Path("/sys/devices/system/cpu/possible")
    if possible.is_file():  # cpuinfo sizes its tables by the highest possible CPU, which may exceed the online ones
        count = max(count, int(possible.read_text().strip().split(",")[-1].split("-")[-1]) + 1)
    midr = int(MIDR, 16)
    entry = (f"processor\t: {{i}}\nBogoMIPS\t: 50.00\nFeatures\t: {CPU_FEATURES}\nCPU implementer\t: "
             f"{midr >> 24:#x}\nCPU architecture: 8\nCPU variant\t: {(midr >> 20) & 0xF:#x}\n"
             f"CPU part\t: {(midr >> 4) & 0xFFF:#x}\nCPU revision\t: {midr & 0xF}\n\n")
    _write_if_changed(root / "proc" / "cpuinfo", "".join(entry.format(i=i) for i in range(count)))
    for i in range(count):
        _write_if_changed(root / f"sys/devices/system/cpu/cpu{i}/regs/identification/midr_el1", MIDR + "\n")


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)  # concurrent suites may describe the CPU at once: each sees a whole file


def emulator(on_step: Callable[[str], None] | None = None) -> Emulator:
    """The emulated aarch64 Python, setting it up on first use (a few minutes, then cached)."""
    step = on_step or (lambda text: None)
    qemu = find_qemu()
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    with _setup_lock(base):  # suites and Ray cells on one node may start at once: one sets up, the others wait
        return _emulator(qemu, base, step)


@contextlib.contextmanager
def _setup_lock(base: Path) -> Iterator[None]:
    import fcntl

    with open(base / ".setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _emulator(qemu: str, base: Path, step: Callable[[str], None]) -> Emulator:
    root = base / "sysroot"
    packages_marker = root / ".lightexport-packages"
    if not (packages_marker.is_file() and packages_marker.read_text() == " ".join(DEBIAN_PACKAGES)):
        _build_sysroot(root, step)
        _write_if_changed(packages_marker, " ".join(DEBIAN_PACKAGES))
    versions = wanted_versions()
    key = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    site = base / f"site-{key}"
    if not (site / ".lightexport-versions").is_file():
        _install_wheels(site, versions, step)
        _write_if_changed(site / ".lightexport-versions", json.dumps(versions, sort_keys=True))
    _describe_cpu(root)
    source = Path(lightexport.__file__).resolve().parent.parent
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(source)]), "PYTHONNOUSERSITE": "1"}
    env.update(_native_setups(base, step))
    return Emulator([qemu, "-cpu", CPU_MODEL, "-L", str(root), str(root / PYTHON)], env, versions)


def _native_setups(base: Path, step: Callable[[str], None]) -> dict[str, str]:
    """What the records' ``aarch64_setup`` hooks add to the worker's environment (each caches its own build)."""
    from lightexport.backends import BACKENDS, resolve

    env: dict[str, str] = {}
    for backend in BACKENDS.values():
        if backend.aarch64_setup:
            env.update(resolve(backend.aarch64_setup)(base, step))
    return env


def launcher(on_step: Callable[[str], None] | None = None) -> tuple[list[str], dict[str, str]]:
    """What a profile record names: the interpreter command and environment its worker starts with."""
    emu = emulator(on_step)
    return emu.command, {**emu.env, "LIGHTEXPORT_EMULATED": f"aarch64 ({CPU_MODEL}) under {Path(emu.command[0]).name}"}


def check_emulator(on_step: Callable[[str], None] | None = None) -> str:
    """Set up the emulated Python if needed and start it once; the line saying what it runs."""
    emu = emulator(on_step)
    probe = "import platform, onnxruntime; print(platform.machine(), 'onnxruntime', onnxruntime.__version__)"
    done = subprocess.run([*emu.command, "-c", probe], env={**os.environ, **emu.env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackendUnavailableError(f"the emulated Python does not start: {(done.stderr.strip() or 'no output')}")
    return f"ready: {done.stdout.strip()} under {emu.command[0]}; wheels {emu.versions}"
