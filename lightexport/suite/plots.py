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


def plot_errors(results: list[dict], path: Path) -> Path:
    """Worst max-error/range per cell, one panel per precision, log scale, tolerance as a dashed line."""
    precisions = [p for p in TOLERANCES if any(r["cell"]["precision"] == p for r in results)] or ["fp32"]
    fig, axes = plt.subplots(1, len(precisions), figsize=(5.5 * len(precisions), 4.5), squeeze=False)
    for ax, precision in zip(axes[0], precisions):
        cells = [r for r in results if r["cell"]["precision"] == precision]
        labels, values, colors = [], [], []
        for r in cells:
            c = r["cell"]
            labels.append(f"{c['model'].replace('fasternet_', 'fn-')}@{c['input_size']}\n{c['profile']}")
            values.append(max(max(o["max_rel"] for o in r["parity"]["outputs"]), 1e-12))
            colors.append(COLORS.get(c["backend"], "black"))
        ax.bar(range(len(values)), values, color=colors)
        ax.set_yscale("log")
        limit = TOLERANCES[precision].max_rel
        if limit:
            ax.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"tolerance {limit:.0e}")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=70, fontsize=6)
        ax.set_title(f"{precision}: max error / output range")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    fig.legend(handles, list(COLORS), loc="upper center", ncol=len(COLORS), bbox_to_anchor=(0.5, 1.06))
    return _save(fig, path)


def plot_latency(results: list[dict], path: Path) -> Path:
    """Median latency per backend/precision for each model, size and profile, with eager PyTorch for scale."""
    groups = sorted({(r["cell"]["model"], r["cell"]["input_size"], r["cell"]["profile"]) for r in results})
    series = sorted({(r["cell"]["backend"], r["cell"]["precision"]) for r in results})
    width = 0.8 / (len(series) + 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4.5))
    labelled: set[str] = set()

    def label(text: str) -> str | None:
        if text in labelled:
            return None
        labelled.add(text)
        return text

    for g, group in enumerate(groups):
        match = [r for r in results if (r["cell"]["model"], r["cell"]["input_size"], r["cell"]["profile"]) == group]
        eager = sum(r["eager_ms"] for r in match) / len(match)
        ax.bar(g, eager, width, color="#d62728", label=label("pytorch eager"))
        for s, (backend, precision) in enumerate(series):
            hit = [r for r in match if (r["cell"]["backend"], r["cell"]["precision"]) == (backend, precision)]
            if hit:
                alpha = {"fp32": 1.0, "fp16": 0.7, "int8": 0.45}[precision]
                ax.bar(g + (s + 1) * width, hit[0]["latency_ms"], width, color=COLORS.get(backend), alpha=alpha,
                       label=label(f"{backend} {precision}"))
    ax.set_xticks([g + 0.4 for g in range(len(groups))],
                  [f"{m.replace('fasternet_', 'fn-')}@{s}\n{p}" for m, s, p in groups], fontsize=7)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("latency by backend (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
