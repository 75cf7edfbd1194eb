"""The tritonserver bundled with nvidia-pytriton serves Python-backend repositories of FasterNet-T0 on loopback.

Parity runs through HTTP against the unfused PyTorch model (random weights), for the ONNX
Runtime and the OpenVINO variant of ``model.py``; then the server must be gone, stub
processes included. A repository that cannot load must fail in bounded time, naming why,
and leave nothing running either.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from lightexport.errors import ExportError
from tests.triton.conftest import needs_server

pytestmark = [needs_server, pytest.mark.slow]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    from lightexport import api
    from lightexport.triton import build_repository

    work = tmp_path_factory.mktemp("triton")
    onnx = api.export("fasternet_t0", "onnx", output=work / "t0.onnx", fuse=True, dynamic=True).path
    repo = work / "repo"
    build_repository(onnx, repo, "python-ort", max_batch=8)
    pytest.importorskip("openvino")
    ir = api.export(onnx, "openvino", output=work / "t0.xml").path
    build_repository(ir, repo, "python-openvino", name="fasternet_t0_ov", max_batch=8)
    return repo


def test_served_parity_and_clean_stop(repository: Path) -> None:
    from lightexport.triton import TritonServer, load_check, serve_parity
    from lightexport.triton.server import group_members

    started = time.monotonic()
    with TritonServer(repository, startup_timeout=60) as server:
        assert time.monotonic() - started < 60 and _port_open(server.port)
        assert server.url.startswith("127.0.0.1:")
        members = group_members(server.pgid)
        assert len(members) >= 3, members  # the server and one Python stub per model
        for name in ("fasternet_t0", "fasternet_t0_ov"):
            report = serve_parity(repository, name, url=server.url, inputs=4, progress=False)
            assert report.passed, report.failures
            assert report.backend == "triton" and report.samples == 4
            (stats,) = report.outputs
            assert stats.shape == (4, 1000)
        (level,) = load_check(repository, "fasternet_t0", url=server.url, concurrencies=(3,), requests=9,
                              max_seconds=20)
        assert level.requests == 9 and level.errors == 0 and level.p99_ms >= level.p50_ms > 0
    assert server.process is None and group_members(server.pgid) == []
    assert not _port_open(server.port)


def test_unloadable_repository_fails_fast_and_leaves_nothing(repository: Path, tmp_path: Path) -> None:
    import shutil

    from lightexport.triton import TritonServer
    from lightexport.triton.server import group_members

    broken = tmp_path / "broken"
    shutil.copytree(repository / "fasternet_t0", broken / "fasternet_t0")
    (broken / "fasternet_t0" / "1" / "model.onnx").unlink()
    server = TritonServer(broken, startup_timeout=60)
    with pytest.raises(ExportError, match="model.onnx"):
        server.start()
    assert server.process is None and group_members(server.pgid) == []
