"""Checkpoint loading that is safe by default and precise when something does not fit.

``torch.load(weights_only=True)`` refuses pickles that could run code; users must opt in
with ``trust=True`` (``--trust-checkpoint``). A checkpoint that does not fit the model is
reported key by key, with shapes, instead of torch's wall of text.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lightexport.errors import CheckpointError, InputFileError
from lightexport.model_defs.registry import ModelSpec, StateDict

# Wrappers used by training frameworks around the actual state dict, tried in order.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net")
_PREFIXES = ("module.", "model.", "_orig_mod.")


#: How the files torch.load reads begin: a zip archive (torch >= 1.6, TorchScript) or a pickle
#: (the legacy format; protocol 2 and later start with 0x80 and the protocol number).
_ZIP_MAGIC = b"PK\x03\x04"


#: keys only one library's layout of a torchvision-named family has (MobileNetV3, EfficientNetV2)
TIMM_MARKER, TORCHVISION_MARKER = "conv_stem.weight", "features.0.0.weight"


def accept_library_layout(state_dict: StateDict, *, timm: bool, from_timm: Callable[[StateDict], StateDict],
                          refuse_torchvision: str, refuse_timm: str) -> StateDict:
    """For a family timm and torchvision both publish as different networks under the same tensors:
    accept the layout of the library this entry's network is (timm's converted by ``from_timm``),
    and refuse the other's with the message that names the right entry.

    Only the key names tell which padding and BatchNorm epsilon the weights were trained with.
    """
    if TORCHVISION_MARKER in state_dict and timm:
        raise CheckpointError(refuse_torchvision)
    if TIMM_MARKER in state_dict and not timm:
        raise CheckpointError(refuse_timm)
    return from_timm(state_dict) if TIMM_MARKER in state_dict else state_dict


def _sniff_format(path: Path) -> None:
    """Refuse a file that is neither a zip archive nor a pickle before torch's unpickler sees it.

    Fed a text file, the weights-only unpickler fails with whatever its first opcode breaks
    (``KeyError: 101`` for "hello"), and random bytes get torch's advice to retry with
    ``weights_only=False``: wrong advice for a file that is not a checkpoint at all.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return
    if head[257:262] == b"ustar":  # torch's pre-1.0 tar format
        return
    if not head:
        kind = "an empty file"
    elif not head.strip(b"\0"):
        kind = "only zero bytes where a checkpoint starts (a sparse or preallocated file?)"
    else:
        kind = "a text file" if _is_text(head) else "unrecognised binary data"
    raise CheckpointError(
        f"{path}: not a readable PyTorch checkpoint ({kind}, neither a torch.save zip archive nor a pickle)"
    )


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\r\n" for c in text)  # control bytes: binary, not text


def _unpickler_reason(exc: BaseException) -> str:
    """The unpickler's own complaint, without torch's advice to load unsafely."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if "weights_only" in reason or "Weights only" in reason:
        reason = "corrupt pickle"
    return reason[:200]


def read_checkpoint(path: str | Path, trust: bool = False) -> StateDict:
    """Read a checkpoint file and return its bare state dict (wrappers and prefixes removed)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"checkpoint not found: {path}")
    _sniff_format(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if trust or "unsupported global" not in str(exc).lower():
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (corrupt or truncated: {_unpickler_reason(exc)})"
            ) from exc
        raise CheckpointError(
            f"{path}: refused to unpickle: it contains Python objects beyond tensors, and unpickling "
            "them can run arbitrary code. Re-save it as a plain state dict, or pass --trust-checkpoint "
            "if you trust its source"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_unpickler_reason(exc)})") from exc
    except (KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError, MemoryError) as exc:
        # What a damaged pickle stream makes the unpickler raise (opcodes naming missing memo
        # entries, popping an empty stack); a checkpoint that decodes never raises these here.
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (corrupt pickle stream: {type(exc).__name__})"
        ) from exc
    return check_finite(unwrap_state_dict(obj, source=str(path)), path)


def check_finite(state_dict: StateDict, source: str | Path) -> StateDict:
    """Refuse weights holding NaN or Inf: an artifact made from them computes NaN, and parity of NaN against NaN
    once passed ``--check`` without a word."""
    bad = [(key, int((~torch.isfinite(t)).sum())) for key, t in state_dict.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        named = ", ".join(f"{key} ({n})" for key, n in bad[:5]) + (f", and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{source}: {len(bad)} tensor(s) hold NaN or Inf values: {named}")
    return state_dict


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> StateDict:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a state dict, found {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors (keys: {', '.join(list(obj)[:8])})")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    _refuse_expanded(tensors, source)
    return tensors


def _refuse_expanded(tensors: StateDict, source: str) -> None:
    """Refuse tensors that claim more elements than the file stores (stride 0 or overlapping views).

    ``torch.save`` keeps a view's strides, so a 10 MB file can hold a classifier of shape
    [100000000, 1280] backed by one row; building a model from that shape asks for 512 GB.
    A checkpoint written from a trained model stores every element, so such a tensor is
    either hostile or broken, and is refused before any shape is used.
    """
    for key, value in tensors.items():
        if value.numel() == 0 or value.layout != torch.strided:
            continue
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(value.shape, value.stride()))
        stored = value.untyped_storage().nbytes() // max(value.element_size(), 1)
        if span < value.numel() or stored < value.numel():
            raise CheckpointError(
                f"{source}: tensor {key} claims shape {list(value.shape)} ({value.numel():,} elements) "
                f"but the file stores {min(span, stored):,} of them (an expanded or overlapping view); "
                "re-save it with tensor.clone()"
            )


@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 6) -> str:
        def clip(items: list[str]) -> str:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {clip(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {clip(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} mis-shaped: {clip(shapes)}")
        return "; ".join(parts)


def compare_keys(state_dict: StateDict, model: nn.Module) -> KeyReport:
    expected = model.state_dict()
    report = KeyReport(
        missing=[k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")],
        unexpected=[k for k in state_dict if k not in expected],
    )
    for key, value in state_dict.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(expected[key].shape)))
    return report


def load_state_dict_strict(model: nn.Module, state_dict: StateDict, label: str, source: str | Path) -> nn.Module:
    """Load ``state_dict`` into ``model``, or explain every key that does not fit."""
    report = compare_keys(state_dict, model)
    if not report.ok:
        raise CheckpointError(f"{source} does not fit {label}: {report.describe()}")
    model.load_state_dict(state_dict, strict=False)
    return model


def load_weights(model: nn.Module, path: str | Path, spec: ModelSpec | None = None, trust: bool = False) -> nn.Module:
    """Load a checkpoint (official, timm, or wrapped) into ``model`` strictly."""
    state_dict = read_checkpoint(path, trust=trust)
    if spec is not None and spec.checkpoint_filter is not None:
        state_dict = spec.checkpoint_filter(state_dict, model)
    return load_state_dict_strict(model, state_dict, spec.name if spec else type(model).__name__, path)
