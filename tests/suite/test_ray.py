"""The suite as Ray tasks (issue #24): on a two-node cluster on loopback, verdicts equal the serial run's, a worker
killed mid-cell is retried and the retry is in the report, and Ctrl-C leaves the report of what finished and no
process behind.

The cluster is two ``ray start`` nodes of one CPU each, addressed on 127.0.0.2: Ray rewrites 127.0.0.1 to the
host's own address, while any other loopback address is kept. Token authentication is off for this loopback-only
cluster, so that no token is written to the user's home; usage statistics are off, as lightexport keeps them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'lightexport[ray]')")

pytestmark = pytest.mark.slow

HOST = "127.0.0.2"
MATRIX = ["--models", "fasternet_t0", "--precisions", "fp32,int8", "--profiles", "mobile-1t", "--input-sizes", "64",
          "--inputs", "2"]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _ray(*args: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), *args], check=True, capture_output=True, text=True, timeout=120,
                   env={**os.environ, **RAY_ENV})


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, one CPU each, on loopback; stopped (every Ray process of theirs) at the end."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # a short path: Ray's socket names must fit 107 bytes
    address = f"{HOST}:{port}"
    try:
        _ray("start", "--head", f"--node-ip-address={HOST}", f"--port={port}", "--num-cpus=1",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}")
        _ray("start", f"--address={address}", f"--node-ip-address={HOST}", "--num-cpus=1", "--disable-usage-stats")
        yield address
    finally:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True,
                       env={**os.environ, **RAY_ENV}, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _suite(out: Path, *extra: str) -> subprocess.Popen:
    def default_sigint():  # a shell's background jobs start with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    args = [sys.executable, "-m", "lightexport.cli", "suite", *MATRIX, "-o", str(out), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **RAY_ENV}, preexec_fn=default_sigint)


def _cells(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())["cells"]


def _verdicts(cells: list[dict]) -> list[tuple]:
    from lightexport.suite.report import verdict

    return [(c["cell"], verdict(c)) for c in cells]


def test_ray_cluster_gives_the_serial_verdicts_in_the_serial_order(cluster, tmp_path):
    backends = ["--backends", "onnxruntime,openvino", "--runs", "2"]
    serial = _suite(tmp_path / "serial", *backends)
    output = serial.communicate(timeout=600)[0]
    assert serial.returncode == 0, output
    distributed = _suite(tmp_path / "ray", *backends, "--ray", cluster)
    output = distributed.communicate(timeout=600)[0]
    assert distributed.returncode == 0, output

    assert len(_cells(tmp_path / "serial")) == 4
    assert _verdicts(_cells(tmp_path / "ray")) == _verdicts(_cells(tmp_path / "serial"))
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["meta"]["executed"] == f"as Ray tasks ({cluster})"
    assert all(c["node"].startswith(f"{HOST}/") and c["cpu"] for c in report["cells"])  # where each latency was taken
    assert set(report["meta"]["nodes"]) == {c["node"] for c in report["cells"]}
    assert "build 4/4:" in output and "cell 4/4:" in output and f"node {HOST}/" in output


def _running_cells() -> list[int]:
    """The pids of Ray workers running a cell now (Ray titles a worker by its task: ``ray::_cell``, else IDLE),
    each with a suite worker under it."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in listing.splitlines()]
    running = {int(pid) for pid, _, args in rows if args.startswith("ray::_cell")}
    return sorted({int(ppid) for _, ppid, args in rows if "lightexport.suite.worker" in args} & running)


def test_a_worker_killed_mid_cell_is_retried_and_the_report_says_so(cluster, tmp_path):
    suite = _suite(tmp_path / "ray", "--backends", "onnxruntime", "--runs", "300", "--ray", cluster)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and suite.poll() is None and time.monotonic() < deadline:
            running = _running_cells()
            if running:
                time.sleep(0.5)  # into the cell
                if running[0] in _running_cells():
                    os.kill(running[0], signal.SIGKILL)  # the Ray worker; its suite worker dies with it
                    killed = running[0]
            time.sleep(0.1)
        output = suite.communicate(timeout=600)[0]
    finally:
        if suite.poll() is None:
            suite.kill()
    assert killed is not None, "no cell was seen running"
    assert suite.returncode == 0, output
    cells = _cells(tmp_path / "ray")
    assert [v for _, v in _verdicts(cells)] == ["pass", "pass"]  # every cell has its verdict
    retried = [c for c in cells if c.get("attempts", 1) > 1]
    assert len(retried) == 1 and retried[0]["attempts"] == 2, cells
    assert "retried: attempt 2 (its worker died)" in (tmp_path / "ray" / "report.md").read_text()


def test_interrupted_ray_suite_keeps_what_finished_and_leaves_no_process(tmp_path):
    """On a Ray instance of its own (--ray alone): SIGINT after the first cell; the report holds it, and neither a
    Ray process nor a suite worker outlives the suite."""
    before = set(_ray_processes())
    suite = _suite(tmp_path / "ray", "--backends", "torch-fused,onnxruntime", "--precisions", "fp32",
                   "--input-sizes", "32,224", "--runs", "2000", "--ray")
    lines = []
    try:
        for line in suite.stdout:
            lines.append(line)
            if line.startswith("cell 1/"):
                break
        assert any(line.startswith("cell 1/") for line in lines), "".join(lines)
        os.kill(suite.pid, signal.SIGINT)
        output = "".join(lines) + suite.communicate(timeout=120)[0]
    finally:
        if suite.poll() is None:
            suite.kill()
    assert suite.returncode == 130, output
    assert "the report holds the 1 of 4 cells that finished" in output
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["meta"]["interrupted"] == "1 of 4 cells finished" and len(report["cells"]) == 1
    time.sleep(2.0)
    stray = {pid: args for pid, args in _ray_processes().items() if pid not in before}
    assert not stray, f"left running: {stray}"


def _ray_processes() -> dict[int, str]:
    """Live processes of Ray (raylet, GCS, workers) and suite workers, by pid (another test's cluster included)."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    marks = ("lightexport.suite.worker", "ray::", "raylet", "gcs_server", "ray/_private", "ray/dashboard")
    return {int(line.split()[0]): line for line in listing.splitlines()
            if any(m in line for m in marks) and not line.split()[1].startswith("Z")}
