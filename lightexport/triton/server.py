"""Start the ``tritonserver`` that the ``nvidia-pytriton`` wheel ships, on loopback, and stop it cleanly.

PyTriton's wheel carries a real Triton Inference Server build (``pytriton/tritonserver``,
its shared libraries in ``nvidia_pytriton.libs``) with the Python backend only, plus one
Python backend stub per CPython version. As PyTriton does, the stub for the running
interpreter is copied next to the backend library (a private backend folder per server),
the server gets the wheel's libraries and this interpreter's ``libpython`` on
``LD_LIBRARY_PATH``, and this environment's ``bin`` leads ``PATH`` so that the embedded
interpreter finds this environment's ``site-packages`` (ONNX Runtime, OpenVINO, NumPy).
The server runs in its own process group: stopping it (SIGTERM, then SIGKILL after a
bounded wait) takes the stub processes with it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lightexport.errors import BackendUnavailableError, ExportError

INSTALL_HINT = "pip install 'lightexport[triton]' (or: pip install --no-deps nvidia-pytriton==0.7.0)"


@dataclass(frozen=True)
class TritonDistribution:
    binary: Path
    libs: Path
    backends: Path  #: the wheel's backends folder (python/)
    stub: Path  #: the Python backend stub for this interpreter's version


def find_tritonserver() -> TritonDistribution:
    """The bundled server and the Python backend stub matching this interpreter, or a one-line install hint."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"tritonserver is not installed; install it with: {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = TritonDistribution(dist / "bin" / "tritonserver", root.parent / "nvidia_pytriton.libs",
                               dist / "backends",
                               dist / "python_backend_stubs" / version / "triton_python_backend_stub")
    if not found.binary.is_file():
        raise BackendUnavailableError(f"{found.binary} is missing; reinstall with: {INSTALL_HINT}")
    if not found.stub.is_file():
        raise BackendUnavailableError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend_dir(dist: TritonDistribution, work: Path) -> Path:
    """A private backends folder: the wheel's python backend plus the stub for this interpreter (executable)."""
    target = work / "backends" / "python"
    target.mkdir(parents=True)
    for f in (dist.backends / "python").iterdir():
        if f.is_file():
            shutil.copy2(f, target / f.name)
    stub = target / "triton_python_backend_stub"
    shutil.copy2(dist.stub, stub)
    stub.chmod(0o755)
    return target.parent


def _environment(dist: TritonDistribution) -> dict[str, str]:
    env = dict(os.environ)
    libpython = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libpython, str(dist.libs), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def _failure_line(log: str) -> str:
    """The line that says why a server did not come up (a model's UNAVAILABLE status, else the last error)."""
    lines = [ln.strip(" |") for ln in log.splitlines()]
    for key in ("UNAVAILABLE", "error:", "E1", "E0"):
        hits = [ln for ln in lines if key in ln]
        if hits:
            return " ".join(hits[-1].split())[:400]
    return "no output"


class TritonServer:
    """``with TritonServer(repo) as server: server.url`` -> ``127.0.0.1:PORT``, HTTP only, every model loaded."""

    def __init__(self, repository: str | Path, *, port: int | None = None, startup_timeout: float = 60.0,
                 stop_timeout: float = 15.0) -> None:
        self.repository = Path(repository).absolute()
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._work: Path | None = None
        self.pgid: int | None = None  #: the server's process group (its pid), kept after stop() for checks

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, backends: Path) -> list[str]:
        dist = find_tritonserver()
        prefix = f"lightexport{os.getpid()}x{self.port}"  # shared-memory regions of concurrent servers must not clash
        return [str(dist.binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                "--http-address=127.0.0.1", f"--http-port={self.port}", "--allow-grpc=false",
                "--allow-metrics=false", "--allow-sagemaker=false", "--allow-vertex-ai=false",
                "--disable-auto-complete-config", "--strict-readiness=true", "--exit-timeout-secs=5",
                "--pinned-memory-pool-byte-size=0", f"--backend-config=python,shm-region-prefix-name={prefix}"]

    def start(self) -> TritonServer:
        dist = find_tritonserver()
        if not self.repository.is_dir():
            raise BackendUnavailableError(f"model repository not found: {self.repository}")
        self.port = self.port or free_port()
        self._work = Path(tempfile.mkdtemp(prefix="lightexport-triton-"))
        self.log_path = self._work / "tritonserver.log"
        backends = _backend_dir(dist, self._work)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command(backends), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=_environment(dist), start_new_session=True)
        self.pgid = self.process.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ExportError(f"tritonserver exited with code {self.process.returncode}: "
                                  f"{_failure_line(self.log())}")
            if _get(f"http://{self.url}/v2/health/ready") == 200:
                return
            time.sleep(0.2)
        raise ExportError(f"tritonserver was not ready after {self.startup_timeout:.0f} s: {_failure_line(self.log())}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.is_file() else ""

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL to the group if it outlives ``stop_timeout``."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=self.stop_timeout)
            # stubs reparented after the server's exit still carry its group id
            deadline = time.monotonic() + self.stop_timeout
            while group_members(process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if group_members(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (from /proc; zombies not counted)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def serving(repository: str | Path | None = None, url: str | None = None, **options) -> Iterator[str]:
    """The URL of a server for ``repository``: the given ``url`` as it is, or a fresh loopback server."""
    if url:
        yield url
        return
    with TritonServer(repository, **options) as server:
        yield server.url
