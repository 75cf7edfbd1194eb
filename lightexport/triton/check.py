"""Prove a repository through a running server: parity against PyTorch, and a bounded load check.

Parity is lightexport's usual judgement (:func:`lightexport.parity.check_parity`) with the
server in the artifact's place: the reference is rebuilt from the provenance of the
artifact packaged inside the repository, the inputs are parity's photos and noise, and
they travel through tritonclient's HTTP client. The load check sends a fixed number of
single-image requests at each concurrency (capped in time too) and reports throughput
and latency percentiles; it talks to loopback servers only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lightexport.artifacts import read_artifact_metadata
from lightexport.backends import BACKENDS
from lightexport.errors import InputFileError, UsageError
from lightexport.triton.repository import CONFIG_NAME, VERSION
from lightexport.triton.server import serving

ARTIFACT_SUFFIXES = tuple(s for b in BACKENDS.values() for s in b.suffixes)


def model_folder(repository: str | Path, name: str | None = None) -> Path:
    """``REPOSITORY/NAME``; without a name, the repository's only model."""
    repository = Path(repository)
    models = sorted(p.name for p in repository.iterdir() if (p / CONFIG_NAME).is_file()) if repository.is_dir() else []
    if not models:
        raise InputFileError(f"{repository} is not a Triton model repository (no NAME/{CONFIG_NAME} in it)")
    if name is None:
        if len(models) > 1:
            raise UsageError(f"{repository} holds models {', '.join(models)}; say which with --name")
        name = models[0]
    if name not in models:
        raise UsageError(f"{repository} has no model {name!r} (it has {', '.join(models)})")
    return repository / name


def packaged_artifact(model_dir: Path) -> Path:
    """The lightexport artifact inside ``NAME/1`` (model.onnx, model.xml or model.plan)."""
    found = sorted(p for p in (model_dir / VERSION).glob("model.*") if p.suffix in ARTIFACT_SUFFIXES)
    if not found:
        raise InputFileError(f"{model_dir / VERSION} holds no artifact lightexport can read "
                             f"({', '.join(ARTIFACT_SUFFIXES)})")
    return found[0]


def serve_parity(repository: str | Path, name: str | None = None, *, url: str | None = None, inputs: int = 8,
                 seed: int = 0, precision: str | None = None, weights: str | Path | None = None, trust: bool = False,
                 progress: bool = True, startup_timeout: float = 60.0):
    """Serve ``repository`` (or reach ``url``) and judge the served model's outputs against PyTorch."""
    from lightexport.api import reference_for
    from lightexport.parity import check_parity, make_inputs
    from lightexport.parity.runners.triton import TritonRunner

    model_dir = model_folder(repository, name)
    artifact = packaged_artifact(model_dir)
    meta = read_artifact_metadata(artifact)
    reference = reference_for(artifact, weights=weights, trust=trust)
    size = int(meta.get("input_size", 0)) or reference.spec.input_size
    feeds = make_inputs(reference.spec, inputs, seed=seed, input_size=size)
    with serving(repository, url, startup_timeout=startup_timeout) as address:
        runner = TritonRunner(address, model_dir.name)
        report = check_parity(runner, reference.module, feeds, precision=precision or meta.get("precision", "fp32"),
                              progress=progress)
    report.artifact = f"{artifact} (served by Triton)"
    return report


@dataclass(frozen=True)
class LoadLevel:
    concurrency: int
    requests: int  #: completed requests
    errors: int
    seconds: float
    throughput: float  #: requests per second
    p50_ms: float
    p99_ms: float
    first_error: str = ""  #: the first failed request's message, if any

    def to_dict(self) -> dict:
        return asdict(self)


def _level(url: str, model: str, feed: dict[str, np.ndarray], concurrency: int, requests: int,
           max_seconds: float) -> LoadLevel:
    import tritonclient.http as http

    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0

    def inputs():
        made = []
        for name, array in feed.items():
            tensor = http.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=True)
            made.append(tensor)
        return made

    # tritonclient's HTTP client runs on gevent: a client belongs to the thread that made it
    ready = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> None:
        nonlocal issued
        client = http.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
        try:
            client.infer(model, inputs())  # connect and touch the model once, untimed
        finally:
            ready.wait()
        try:
            while True:
                with lock:
                    if issued >= requests or time.perf_counter() > deadline[0]:
                        return
                    issued += 1
                t0 = time.perf_counter()
                try:
                    client.infer(model, inputs())
                except Exception as exc:  # a failed request is counted and reported, not fatal to the level
                    with lock:
                        errors.append(" ".join(str(exc).split()))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + 60.0  # set properly below, once every client is connected
    ready.wait(timeout=60)
    start = time.perf_counter()
    deadline[0] = start + max_seconds
    for t in threads:
        t.join(timeout=max_seconds + 60)
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return LoadLevel(concurrency, len(latencies), len(errors), elapsed, len(latencies) / elapsed if elapsed else 0.0,
                     float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                     float(np.percentile(ms, 99)) if len(ms) else float("nan"), errors[0] if errors else "")


def load_check(repository: str | Path, name: str | None = None, *, url: str | None = None,
               concurrencies: tuple[int, ...] = (1, 4, 8), requests: int = 64, max_seconds: float = 10.0,
               startup_timeout: float = 60.0) -> list[LoadLevel]:
    """Single-image requests at each concurrency: ``requests`` per level, at most ``max_seconds`` per level."""
    if not concurrencies or min(concurrencies) < 1 or requests < 1 or max_seconds <= 0:
        raise UsageError("the load check needs concurrencies >= 1, requests >= 1 and a positive time cap")
    model_dir = model_folder(repository, name)
    meta = read_artifact_metadata(packaged_artifact(model_dir))
    size = int(meta.get("input_size") or 224)
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)}
    with serving(repository, url, startup_timeout=startup_timeout) as address:
        return [_level(address, model_dir.name, feed, c, requests, max_seconds) for c in concurrencies]
