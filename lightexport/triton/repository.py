"""Write a Triton Inference Server model repository around a lightexport artifact.

``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/<artifact>``, for Triton's native backends
(ONNX Runtime, OpenVINO, TensorRT) or for its Python backend hosting ONNX Runtime or
OpenVINO (``model.py``), which is what a CPU-only Triton build without those backends can
serve. The ways Triton serves each format are entries of that format's record
(:mod:`lightexport.backends`, ``triton``), read by :func:`triton_backends`.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightexport.artifacts import read_artifact_metadata
from lightexport.backends import BACKENDS, backend_for_path
from lightexport.errors import OutputError, UsageError
from lightexport.triton.config import Batching, ModelConfig, has_schema, parse_config
from lightexport.triton.tensors import read_io

CONFIG_NAME = "config.pbtxt"
VERSION = "1"


@dataclass(frozen=True)
class TritonBackend:
    """How Triton serves one artifact format: the config's ``platform``/``backend`` and the file names it expects."""

    name: str  #: the --backend value
    format: str  #: lightexport's artifact format (a key of lightexport.backends.BACKENDS)
    filename: str  #: the artifact's name in the version folder (Triton's default for that backend)
    backend: str | None = None
    platform: str | None = None
    kind: str = "KIND_CPU"
    python_runtime: str | None = None  #: for the Python backend: which runtime model.py hosts


def triton_backends() -> dict[str, TritonBackend]:
    """Every way Triton serves a lightexport format, from the format records' ``triton`` entries."""
    found: dict[str, TritonBackend] = {}
    for record in BACKENDS.values():
        kind = "KIND_CPU" if record.cpu else "KIND_GPU"
        for name, how, filename in record.triton:
            field_name, _, value = how.partition(":")
            if field_name == "python":  # Triton's Python backend hosting the runtime (model.py)
                found[name] = TritonBackend(name, record.name, filename, backend="python", python_runtime=value)
            elif field_name == "platform":
                found[name] = TritonBackend(name, record.name, filename, platform=value, kind=kind)
            else:
                found[name] = TritonBackend(name, record.name, filename, backend=value, kind=kind)
    return found


def get_triton_backend(name: str) -> TritonBackend:
    backends = triton_backends()
    if name not in backends:
        close = difflib.get_close_matches(name, list(backends), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown Triton backend {name!r}{hint} (choose one of {', '.join(backends)})")
    return backends[name]


@dataclass
class RepositoryResult:
    repository: Path
    model_dir: Path
    name: str
    artifact: Path  #: the packaged artifact inside the repository (lightexport's runners and parity read it)
    config: ModelConfig
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.model_dir / CONFIG_NAME

    def to_dict(self) -> dict:
        return {"repository": str(self.repository), "model": self.name, "artifact": str(self.artifact),
                "config": str(self.config_path), "max_batch_size": self.config.max_batch_size,
                "seconds": round(self.seconds, 3), "notes": self.notes}


def preferred_batch_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two up to ``max_batch``, and ``max_batch`` itself (8 -> 2, 4, 8)."""
    sizes = [s for s in (2 ** i for i in range(1, max_batch.bit_length() + 1)) if s < max_batch]
    return (*sizes, max_batch) if max_batch > 0 else ()


def _package(source: str | Path, target: TritonBackend, version_dir: Path) -> tuple[Path, list[str]]:
    """Copy an artifact (every file it is made of) into ``version_dir`` under Triton's file name, or export a
    model name there."""
    artifact = version_dir / target.filename
    path = Path(source)
    if path.suffix and path.is_file():
        record = backend_for_path(path)
        if record.name != target.format:
            fitting = [b.name for b in triton_backends().values() if b.format == record.name]
            use = f"use --backend {' or '.join(fitting)}" if fitting else "Triton cannot serve it"
            raise UsageError(f"{path} is a {record.name} artifact; --backend {target.name} serves {target.format} "
                             f"artifacts ({use})")
        for companion, given, placed in zip(("", *record.companions), record.files(path), record.files(artifact)):
            if not given.is_file():
                if companion.startswith("+"):  # appended sidecars hold provenance only
                    continue
                raise UsageError(f"{given} is missing: a {record.name} artifact is "
                                 f"{' + '.join(f.name for f in record.files(path))}")
            shutil.copy2(given, placed)
        return artifact, [f"packaged {path}"]
    if path.suffix and not path.exists() and any(c in str(source) for c in "/\\."):
        raise UsageError(f"{source} is neither an artifact file nor a registered model name")
    from lightexport.api import export

    result = export(str(source), target.format, output=artifact, fuse=True, dynamic=True)
    return artifact, [f"exported {source} to {target.format} (fused, dynamic batch/height/width)", *result.notes]


def _warmup_dims(shape: tuple[int, ...], batched: bool, size: int) -> tuple[int, ...]:
    """A concrete request shape for the warm-up: dynamic batch 1, dynamic spatial dims the recorded input size."""
    dims = list(shape[1:] if batched else shape)
    if not batched and dims and dims[0] == -1:
        dims[0] = 1
    return tuple(size if d == -1 else d for d in dims)


def build_config(name: str, target: TritonBackend, artifact: Path, *, max_batch: int = 8, instances: int = 1,
                 dynamic_batching: bool = True, max_queue_delay_us: int = 500) -> ModelConfig:
    """The model configuration for a packaged artifact; refuses Triton batching on a fixed-batch artifact."""
    if max_batch < 0 or instances < 1 or max_queue_delay_us < 0:
        raise UsageError("--max-batch must be >= 0, --instances >= 1 and the queue delay >= 0")
    meta = read_artifact_metadata(artifact)
    io = read_io(artifact, meta)
    fixed = [t for t in (*io.inputs, *io.outputs) if not t.batch_dynamic]
    if max_batch > 0 and fixed:
        t = fixed[0]
        raise UsageError(f"{artifact.name}: {t.name} has a fixed batch axis {list(t.shape)}, but --max-batch "
                         f"{max_batch} needs a dynamic one; re-export with 'lightexport onnx "
                         f"{meta.get('model', 'MODEL')} --dynamic', or pass --max-batch 0")
    size = int(meta.get("input_size") or 224)
    batched = max_batch > 0
    parameters = {f"lightexport.{k}": v for k, v in sorted(meta.items())}
    if target.python_runtime:
        parameters.update({"runtime": target.python_runtime, "artifact": target.filename})
        from lightexport.parity.settings import run_settings
        from lightexport.precision import Precision

        # run as exported (the pinned setting): OpenVINO's CPU plugin runs float layers in bf16 by default
        pinned = run_settings(backend_for_path(artifact), Precision.parse(meta.get("precision")))[0]
        if pinned.runner_options.get("inference_precision"):
            parameters["inference_precision"] = pinned.runner_options["inference_precision"]
    return ModelConfig(
        name=name, inputs=io.inputs, outputs=io.outputs, max_batch_size=max_batch, platform=target.platform,
        backend=target.backend, default_model_filename=target.filename if target.python_runtime is None else None,
        instance_kind=target.kind, instance_count=instances,
        batching=Batching(preferred_batch_sizes(max_batch), max_queue_delay_us) if batched and dynamic_batching
        else None,
        parameters=parameters,
        warmup_dims={t.name: _warmup_dims(t.shape, batched, size) for t in io.inputs},
    )


def _model_name(source: str | Path, artifact: Path) -> str:
    model = read_artifact_metadata(artifact).get("model")
    return model or Path(source).stem


def _install(staged: Path, final: Path) -> None:
    """Move the staged model folder into place; an older one of the same name is replaced as a whole."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except OSError as exc:
        if old is not None:
            os.replace(old, final)
        raise OutputError(f"cannot write {final}: {exc.strerror}") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_repository(
    source: str | Path,
    repository: str | Path,
    backend: str = "python-ort",
    *,
    name: str | None = None,
    max_batch: int = 8,
    instances: int = 1,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 500,
) -> RepositoryResult:
    """Package ``source`` (an artifact, or a registered model name, exported first) as ``REPOSITORY/NAME``.

    The model folder is assembled beside its destination and moved in only when complete,
    so a failed build leaves neither a partial folder nor a damaged older version.
    """
    start = time.perf_counter()
    target = get_triton_backend(backend)
    repository = Path(repository).absolute()
    given = Path(source)
    if given.suffix and given.is_file() and backend_for_path(given).name == target.format:
        # what the artifact cannot be served as is said by its own path, before any folder is made
        build_config(name or _model_name(source, given), target, given, max_batch=max_batch, instances=instances,
                     dynamic_batching=dynamic_batching, max_queue_delay_us=max_queue_delay_us)
    try:
        repository.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {repository}: {exc.strerror}") from exc
    staging = Path(tempfile.mkdtemp(prefix=".lightexport-", dir=repository))
    try:
        version_dir = staging / "model" / VERSION
        version_dir.mkdir(parents=True)
        artifact, notes = _package(source, target, version_dir)
        name = name or _model_name(source, artifact)
        if not name or name.startswith(".") or "/" in name:
            raise UsageError(f"--name {name!r} is not a usable model folder name")
        config = build_config(name, target, artifact, max_batch=max_batch, instances=instances,
                              dynamic_batching=dynamic_batching, max_queue_delay_us=max_queue_delay_us)
        text = config.render()
        if has_schema():
            parse_config(text)
            notes.append("config.pbtxt parsed with Triton's model configuration schema")
        (staging / "model" / CONFIG_NAME).write_text(text)
        if target.python_runtime:
            shutil.copy2(Path(__file__).with_name("python_model.py"), version_dir / "model.py")
        final = repository / name
        _install(staging / "model", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    packaged = final / VERSION / artifact.name
    return RepositoryResult(repository, final, name, packaged, config, time.perf_counter() - start, notes)
