"""The fake format's runner, provenance reader and tensor reader."""

import json
from pathlib import Path

import numpy as np
import torch

from lightexport.errors import InputFileError
from lightexport.parity.runners.base import ArtifactIO, Runner, TensorSpec


def _load(path: Path, extra: dict | None = None):
    try:
        return torch.jit.load(str(path), _extra_files=extra if extra is not None else {})
    except Exception as exc:
        raise InputFileError(f"{path} is not a TorchScript file: {str(exc).splitlines()[0]}") from exc


def read_metadata(path: Path) -> dict[str, str]:
    extra = {"lightexport.json": ""}
    _load(path, extra)
    return json.loads(extra["lightexport.json"] or "{}")


def read_io(path: Path, metadata: dict[str, str] | None = None) -> ArtifactIO:
    meta = metadata or {k.removeprefix("lightexport."): v for k, v in read_metadata(path).items()}
    size, batch = int(meta["input_size"]), int(meta["batch"])
    return ArtifactIO((TensorSpec("input", "float32", (batch, 3, size, size)),), ())


class TorchScriptRunner(Runner):
    backend = "fake-jit"

    def __init__(self, path, threads=None, name=None):
        super().__init__(name)
        self.path, self.threads = Path(path), threads

    def activate_impl(self) -> None:
        self.module = _load(self.path).eval()
        self.input_names, self.output_names = ["input"], ["logits"]

    def infer_impl(self, feed):
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.asarray(feed["input"], dtype=np.float32)))
        return {"logits": out.numpy()}
