"""Parameter and MAC counts, measured rather than quoted, so every registered model gets them.

Counting runs on the meta device: shapes propagate, nothing is computed or allocated.
Still, building and tracing all registered models takes seconds (6-15 s on a 2-core
machine), too slow for ``lightexport list``; so the counts at each model's default input
size are kept as data in ``complexity.json``, written by ``python -m
lightexport.model_defs.complexity`` and checked against a fresh count by the tests.
Other sizes, build options and models missing from the table are counted live.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from lightexport.model_defs.registry import ModelSpec

TABLE = Path(__file__).with_name("complexity.json")


def measure(spec: ModelSpec, input_size: int | None = None, **build_kwargs: Any) -> tuple[int, float]:
    """Count (parameters, GMACs for one image) by building the model on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = input_size or spec.input_size
    with torch.device("meta"):
        model = spec.build(**build_kwargs).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2 / 1e9


@cache
def _table() -> dict[str, dict[str, Any]]:
    try:
        return json.loads(TABLE.read_text())["models"]
    except (OSError, ValueError, KeyError):
        return {}


def complexity(spec: ModelSpec, input_size: int | None = None, **build_kwargs: Any) -> tuple[int, float]:
    """Return (parameters, GMACs for one image); GMACs are what papers call 'FLOPs'."""
    size = input_size or spec.input_size
    row = _table().get(spec.name)
    if not build_kwargs and row is not None and row["input_size"] == size:
        return int(row["params"]), float(row["gmacs"])
    return measure(spec, input_size, **build_kwargs)


def compute_table() -> dict[str, Any]:
    """Every registered model's counts at its default input size, as ``complexity.json`` holds them."""
    from lightexport.model_defs import get_spec, list_models

    rows = {}
    for name in list_models():
        spec = get_spec(name)
        params, gmacs = measure(spec)
        rows[name] = {"params": params, "gmacs": round(gmacs, 6), "input_size": spec.input_size}
    return {"about": "written by python -m lightexport.model_defs.complexity; tests check it is current",
            "models": rows}


def main() -> None:
    TABLE.write_text(json.dumps(compute_table(), indent=1) + "\n")
    print(f"wrote {TABLE} ({len(_table.__wrapped__())} models)", file=sys.stderr)


if __name__ == "__main__":
    main()
