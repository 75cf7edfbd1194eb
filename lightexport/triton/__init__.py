"""Triton Inference Server model repositories: write one around an artifact, serve it, prove it.

``build_repository`` packages an artifact (or exports a model first) as ``REPO/NAME/1/...``
with a ``config.pbtxt`` read from the artifact; ``serve_parity`` and ``load_check`` run it
in the ``tritonserver`` that the ``nvidia-pytriton`` wheel ships. Nothing here imports
tritonclient or starts a process until asked.
"""

from lightexport.triton.check import LoadLevel, load_check, serve_parity
from lightexport.triton.repository import RepositoryResult, build_repository, triton_backends
from lightexport.triton.server import TritonServer

__all__ = ["LoadLevel", "RepositoryResult", "TritonServer", "build_repository", "load_check", "triton_backends",
           "serve_parity"]
