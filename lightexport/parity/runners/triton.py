"""A model served by Triton Inference Server, behind the runner interface (HTTP, through tritonclient).

The runner only talks to a server; starting one is :mod:`lightexport.triton.server`'s job.
Input and output names and data types come from the server's model metadata, so parity
judges what the server actually returns for the tensors it declares.
"""

from __future__ import annotations

import numpy as np

from lightexport.errors import BackendUnavailableError, InputFileError
from lightexport.parity.runners.base import Feed, Outputs, Runner

_NUMPY = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
          "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


class TritonRunner(Runner):
    """``TritonRunner("127.0.0.1:8000", "fasternet_t0")``: one HTTP client, one request per ``infer``."""

    backend = "triton"

    def __init__(self, url: str, model: str, version: str = "", timeout: float = 60.0, name: str | None = None):
        super().__init__(name)
        self.url, self.model, self.version, self.timeout = url, model, version, timeout
        self.path = f"triton://{url}/{model}"
        self._types: dict[str, str] = {}

    def activate_impl(self) -> None:
        try:
            import tritonclient.http as http
            from tritonclient.utils import InferenceServerException
        except ImportError as exc:
            raise BackendUnavailableError("tritonclient is not installed; install it with: "
                                          "pip install 'lightexport[triton]'") from exc
        self._http, self._error = http, InferenceServerException
        self.client = http.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                 network_timeout=self.timeout)
        try:
            ready = self.client.is_model_ready(self.model, self.version)
            meta = self.client.get_model_metadata(self.model, self.version) if ready else None
        except (InferenceServerException, OSError) as exc:
            raise InputFileError(f"Triton at {self.url} cannot be reached: {exc}") from exc
        if not ready:
            raise InputFileError(f"Triton at {self.url} has no ready model {self.model!r}")
        self.input_names = [t["name"] for t in meta["inputs"]]
        self.output_names = [t["name"] for t in meta["outputs"]]
        self._types = {t["name"]: t["datatype"] for t in meta["inputs"]}

    def deactivate_impl(self) -> None:
        self.client.close()

    def infer_impl(self, feed: Feed) -> Outputs:
        http = self._http
        inputs = []
        for name in self.input_names:
            array = np.ascontiguousarray(feed[name], dtype=_NUMPY.get(self._types[name]))
            tensor = http.InferInput(name, list(array.shape), self._types[name])
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [http.InferRequestedOutput(n, binary_data=True) for n in self.output_names]
        try:
            result = self.client.infer(self.model, inputs, model_version=self.version, outputs=outputs)
        except self._error as exc:
            shapes = {n: tuple(feed[n].shape) for n in self.input_names}
            raise InputFileError(f"Triton model {self.model} cannot run on inputs {shapes}: {exc}") from exc
        return {n: result.as_numpy(n) for n in self.output_names}
