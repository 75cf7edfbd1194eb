"""Memory predicted before the work: a job that cannot fit stops with one line, instead of being OOM-killed.

``lightexport onnx mobilenet_v2 --input-size 4096`` (inside the allowed range) was killed at 24 GB
with no message. What an export holds at its peak grows with the model's activations at the asked
size and batch: tracing, onnxsim's check run and the runtime sessions each materialize them.
Measured on this project's machine (peak RSS of the whole command, ``lightexport onnx``):

| model, px | activations (sum over layers) | peak RSS |
|---|---|---|
| MobileNetV2, 224 | 74 MiB | 979 MiB |
| MobileNetV2, 512 | 388 MiB | 1317 MiB |
| MobileNetV2, 1024 | 1552 MiB | 2397 MiB |
| MobileNetV2, 1536 | 3491 MiB | 4376 MiB |
| FasterNet-T0, 1024 | 388 MiB | 1210 MiB |

so the peak is the process's own footprint plus about one copy of every layer's activations
(``EXPORT_ACTIVATION_COPIES``); OpenVINO's conversion measured the same (2360 MiB at 1024). int8 adds
the calibration images' decoded crops (``uint8``, kept for the passes) and a calibration batch's
activations. Parity holds one batch's activations per runtime plus every output it compares.

Activations are counted by running the model once at a small side (``PROBE``) with a hook on every
leaf module, then scaled by area and batch: exact for convolutional networks up to stride rounding,
a few milliseconds for any module (a meta-device pass cost 9 s of one-time set-up on this machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lightexport.errors import UsageError

#: One copy of every layer's activations (measured: 1.0 from 512 px up, see the table) and headroom.
EXPORT_ACTIVATION_COPIES = 1.05
#: Side of the probe pass whose activation sizes are scaled to the asked input size.
PROBE = 128
#: Below this a prediction is not worth refusing on (the process itself, libraries loaded).
SLACK_BYTES = 512 << 20


def available_bytes() -> int | None:
    """Memory this process may still take: the kernel's MemAvailable, or a cgroup's remaining limit if lower."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text != "max" and int(text) < 1 << 60:
                candidates.append(int(text) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return min(candidates) if candidates else None


def activation_bytes(module, input_size: int, batch: int = 1, channels: int = 3) -> tuple[int, int] | None:
    """(every leaf module's output bytes, the outputs' bytes) of one forward pass at ``input_size`` x ``batch``,
    from a pass at ``PROBE`` px scaled by area; None when the probe pass cannot run (a model that needs more pixels)."""
    import torch

    probe = min(input_size, PROBE)
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.inference_mode():
            out = module(torch.zeros(1, channels, probe, probe))
    except Exception:  # noqa: BLE001  # a probe that fails predicts nothing; the job itself will say why
        return None
    finally:
        for hook in hooks:
            hook.remove()
    scale = (input_size / probe) ** 2 * batch
    from lightexport.usercode import flat_outputs

    out_bytes = sum(t.numel() * t.element_size() * (scale if t.ndim >= 3 else batch) for _, t in flat_outputs(out))
    return int(total * scale), int(out_bytes)


@dataclass(frozen=True)
class Estimate:
    what: str  #: "exporting mobilenet_v2 at 4096 px, batch 1"
    bytes: int
    parts: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return ", ".join(f"{name} {_gib(size)}" for name, size in self.parts if size)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def require(estimate: Estimate | None, available: int | None = None) -> None:
    """A usage error when ``estimate`` exceeds the memory available now: say how much, of what, and what to change."""
    if estimate is None:
        return
    available = available_bytes() if available is None else available
    if available is None or estimate.bytes <= max(available, SLACK_BYTES):
        return
    raise UsageError(f"{estimate.what} needs about {_gib(estimate.bytes)} of memory ({estimate.describe()}), but "
                     f"{_gib(available)} is available: use a smaller --input-size or --batch"
                     + (", or fewer --calib-size images" if any(n == "calibration crops" for n, _ in estimate.parts)
                        else ""))


def export_estimate(module, name: str, input_size: int, batch: int, *, calib_images: int = 0,
                    channels: int = 3) -> Estimate | None:
    """What exporting ``module`` at ``input_size`` x ``batch`` takes beyond this process (``calib_images``: int8)."""
    counted = activation_bytes(module, input_size, batch, channels)
    if counted is None:
        return None
    activations, _ = counted
    parts = [("activations", int(activations * EXPORT_ACTIVATION_COPIES))]
    if calib_images:
        parts.append(("calibration crops", calib_images * 3 * input_size * input_size))
    return Estimate(f"exporting {name} at {input_size} px, batch {batch}", sum(p for _, p in parts), tuple(parts))


def parity_estimate(module, name: str, input_size: int, batch: int, inputs: int, runners: int = 2,
                    channels: int = 3) -> Estimate | None:
    """Parity over ``inputs`` batches: each runner's activations for one batch, and every output kept to compare."""
    counted = activation_bytes(module, input_size, batch, channels)
    if counted is None:
        return None
    activations, outputs = counted
    parts = (("activations", activations * runners), ("outputs kept", outputs * inputs * runners))
    return Estimate(f"checking {name} at {input_size} px on {inputs} inputs of {batch}", sum(p for _, p in parts),
                    parts)


def calib_images_in(folder: str | os.PathLike | None, wanted: int) -> int:
    """How many calibration images a folder gives (at most ``wanted``), without decoding any."""
    if folder is None:
        return 0
    from lightexport.calib.source import EXTENSIONS

    count = 0
    try:
        for _root, _dirs, files in os.walk(folder, followlinks=True):
            count += sum(1 for f in files if f.lower().endswith(EXTENSIONS))
            if count >= wanted:
                return wanted
    except OSError:
        return 0
    return count
