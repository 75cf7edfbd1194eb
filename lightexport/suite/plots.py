"""Plots a person reads faster than the table: error per precision and backend, latency per backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lightexport.fileio import atomic_output  # noqa: E402
from lightexport.parity.tolerances import TOLERANCES  # noqa: E402

COLORS = {"torch-fused": "#7f7f7f", "onnxruntime": "#1f77b4", "openvino": "#9467bd", "tensorrt": "#2ca02c"}


def _save(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _judged_error(precision: str) -> tuple[str, float | None, object]:
    """What the error panel of a precision shows: the metric its tolerance judges, and that limit.

    fp32/fp16 are judged on max error over the output range; int8 on cosine similarity,
    shown as 1 - cosine so that, like the others, lower is better and a log axis works.
    """
    tolerance = TOLERANCES[precision]
    if tolerance.max_rel is not None:
        return "max error / output range", tolerance.max_rel, lambda o: o["max_rel"]
    return "1 - cosine (mean)", 1.0 - tolerance.cosine, lambda o: 1.0 - o["cosine"]


def _cell_label(cell: dict) -> str:
    return f"{cell['model']} @{cell['input_size']}  {cell['profile']}"


def plot_errors(results: list[dict], path: Path) -> Path:
    """One panel per precision: each cell's worst output on the judged metric, log scale, limit as a red line."""
    precisions = [p for p in TOLERANCES if any(r["cell"]["precision"] == p for r in results)] or ["fp32"]
    rows = max(1, max(sum(r["cell"]["precision"] == p for r in results) for p in precisions))
    fig, axes = plt.subplots(1, len(precisions), figsize=(5.2 * len(precisions), 1.2 + 0.24 * rows), squeeze=False)
    for ax, precision in zip(axes[0], precisions):
        title, limit, metric = _judged_error(precision)
        cells = sorted((r for r in results if r["cell"]["precision"] == precision),
                       key=lambda r: (r["cell"]["backend"], r["cell"]["model"], r["cell"]["profile"],
                                      r["cell"]["input_size"]))
        floor = limit * 1e-3 if limit else 1e-12  # every panel spans three decades under its limit
        values = [max(max(metric(o) for o in r["parity"]["outputs"]), floor) for r in cells]
        ax.barh(range(len(cells)), values, color=[COLORS.get(r["cell"]["backend"], "black") for r in cells])
        ax.set_yticks(range(len(cells)), [_cell_label(r["cell"]) for r in cells], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        if limit:
            ax.axvline(limit, color="red", linestyle="--", linewidth=1.2, label=f"limit {limit:g}")
            ax.set_xlim(floor, limit * 3)
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{precision}: {title}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    present = [b for b in COLORS if any(r["cell"]["backend"] == b for r in results)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[b]) for b in present]
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (1.2 + 0.24 * rows)))
    fig.legend(handles, present, loc="upper center", ncol=len(present))
    return _save(fig, path)


def plot_latency(results: list[dict], path: Path) -> Path:
    """One panel per model (their scales differ tenfold): p50 per backend/precision, eager PyTorch for scale."""
    models = sorted({r["cell"]["model"] for r in results})
    series = sorted({(r["cell"]["backend"], r["cell"]["precision"]) for r in results})
    width = 0.8 / (len(series) + 1)
    groups_per_model = {m: sorted({(r["cell"]["input_size"], r["cell"]["profile"]) for r in results
                                   if r["cell"]["model"] == m}) for m in models}
    widest = max((len(g) for g in groups_per_model.values()), default=1)
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(max(5, 1.5 * widest) * max(1, len(models)), 4.2),
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        groups = groups_per_model[model]
        for g, (size, profile) in enumerate(groups):
            match = [r for r in results if (r["cell"]["model"], r["cell"]["input_size"], r["cell"]["profile"])
                     == (model, size, profile)]
            eager = sum(r["eager_ms"] for r in match) / len(match)
            ax.bar(g, eager, width, color="#d62728", label="pytorch eager" if g == 0 else None)
            for s, (backend, precision) in enumerate(series):
                hit = [r for r in match if (r["cell"]["backend"], r["cell"]["precision"]) == (backend, precision)]
                if hit:
                    alpha = {"fp32": 1.0, "fp16": 0.7, "int8": 0.45}[precision]
                    ax.bar(g + (s + 1) * width, hit[0]["latency_ms"], width, color=COLORS.get(backend), alpha=alpha,
                           label=f"{backend} {precision}" if g == 0 else None)
        ax.set_xticks([g + 0.4 for g in range(len(groups))], [f"@{s}\n{p}" for s, p in groups], fontsize=8)
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"{model}: latency (lower is better)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8)
    return _save(fig, path)
