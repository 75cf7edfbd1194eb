"""Plots a person reads faster than the table: error per precision and backend, latency per backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lightexport.fileio import atomic_output  # noqa: E402
from lightexport.parity.tolerances import TOLERANCES  # noqa: E402

#: The fused PyTorch model's colour; every runtime's comes from its format record.
TORCH_FUSED_COLOR = "#7f7f7f"


def colors() -> dict[str, str]:
    """Each backend of the suite (torch-fused, then every record's runtime) and its colour, in the table's order."""
    from lightexport.backends import BACKENDS
    from lightexport.suite.matrix import TORCH_FUSED

    return {TORCH_FUSED: TORCH_FUSED_COLOR, **{b.runtime: b.color for b in BACKENDS.values()}}


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
    return f"{cell['model']} @{cell['input_size']} {cell['profile']} · {cell['backend']}"


FAIL_HATCH = "////"


def _outcome(result: dict) -> str | None:
    """None for a judged cell, else why it has no bar ("errored: ...", "skipped: ...")."""
    if "parity" in result:
        return None
    reason = result.get("error") or result.get("skipped") or ""
    kind = "errored" if result.get("error") else "skipped"
    return f"{kind}: {reason}"[:90]


def plot_errors(results: list[dict], path: Path) -> Path:
    """One panel per precision: each cell's worst output on the judged metric, log scale, limit as a red line.

    Rows name the backend as well as the cell (two backends' rows differ only there); a cell
    that fails parity is hatched, outlined in red and labelled FAIL, and the x axis reaches
    past the worst bar so nothing is cut at the limit. A cell that errored or was skipped keeps
    its row, labelled with why (an errored cell once showed as an empty frame). The legend sits
    just above the panels, off the bars.
    """
    precisions = [p for p in TOLERANCES if any(r["cell"]["precision"] == p for r in results)] or ["fp32"]
    rows = max(1, max(sum(r["cell"]["precision"] == p for r in results) for p in precisions))
    height = 1.3 + 0.26 * rows
    fig, axes = plt.subplots(1, len(precisions), figsize=(5.6 * len(precisions), height), squeeze=False)
    palette = colors()
    for ax, precision in zip(axes[0], precisions):
        title, limit, metric = _judged_error(precision)
        cells = sorted((r for r in results if r["cell"]["precision"] == precision),
                       key=lambda r: (r["cell"]["model"], r["cell"]["input_size"], r["cell"]["profile"],
                                      r["cell"]["backend"]))
        floor = limit * 1e-3 if limit else 1e-12  # every panel spans three decades under its limit
        values = [floor if _outcome(r) else max(max(metric(o) for o in r["parity"]["outputs"]), floor)
                  for r in cells]
        failed = [_outcome(r) is None and not r["parity"]["passed"] for r in cells]
        bars = ax.barh(range(len(cells)), [0 if _outcome(r) else v for r, v in zip(cells, values)],
                       color=[palette.get(r["cell"]["backend"], "black") for r in cells], left=floor)
        top = max([limit * 3 if limit else floor * 10, *(v * 4 for v in values)])
        for bar, value, bad, result in zip(bars, values, failed, cells):
            middle = bar.get_y() + bar.get_height() / 2
            if _outcome(result):
                ax.text(floor * 1.3, middle, _outcome(result), va="center", fontsize=7, color="#444444",
                        style="italic")
            elif bad:
                bar.set_hatch(FAIL_HATCH)
                bar.set_edgecolor("#d62728")
                bar.set_linewidth(1.2)
                ax.text(value * 1.15, middle, "FAIL", va="center", fontsize=7, color="#d62728", fontweight="bold")
        ax.set_yticks(range(len(cells)), [_cell_label(r["cell"]) for r in cells], fontsize=7)
        for tick, bad, result in zip(ax.get_yticklabels(), failed, cells):
            if bad:
                tick.set_color("#d62728")
            elif _outcome(result):
                tick.set_color("#777777")
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(floor, top)
        if limit:
            ax.axvline(limit, color="red", linestyle="--", linewidth=1.2)
        limit_text = f", limit {limit:g}" if limit else ""
        ax.set_title(f"{precision}: {title}{limit_text}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    present = [b for b in palette if any(r["cell"]["backend"] == b for r in results)]
    present += sorted({r["cell"]["backend"] for r in results} - set(palette))  # a backend no record names any more
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette.get(b, "black")) for b in present]
    labels = list(present)
    handles.append(plt.Line2D([0], [0], color="red", linestyle="--", linewidth=1.2))
    labels.append("limit")
    if any(failed_result(r) for r in results):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="#d62728", hatch=FAIL_HATCH))
        labels.append("fails parity")
    legend_inches = 0.22
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_inches / height))
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    return _save(fig, path)


def failed_result(result: dict) -> bool:
    return "parity" in result and not result["parity"]["passed"]


#: How a precision is drawn in a backend's colour: solid, lighter, and hatched so fp16 and int8
#: stay apart even where their shades are close (in print, or for colour-blind readers).
PRECISION_STYLE = {
    "fp32": {"alpha": 1.0, "hatch": None},
    "bf16": {"alpha": 0.75, "hatch": ".."},
    "fp16": {"alpha": 0.6, "hatch": "//"},
    "int8": {"alpha": 0.3, "hatch": "xx"},
}


def plot_latency(results: list[dict], path: Path) -> Path:
    """One panel per model (their scales differ tenfold): p50 per backend/precision, eager PyTorch for scale."""
    models = sorted({r["cell"]["model"] for r in results})
    order = list(PRECISION_STYLE)
    series = sorted({(r["cell"]["backend"], r["cell"]["precision"]) for r in results},
                    key=lambda bp: (bp[0], order.index(bp[1]) if bp[1] in order else len(order)))
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
                    style = PRECISION_STYLE.get(precision, {"alpha": 1.0, "hatch": None})
                    color = colors().get(backend, "black")
                    ax.bar(g + (s + 1) * width, hit[0]["latency_ms"], width, facecolor=color, alpha=style["alpha"],
                           hatch=style["hatch"], edgecolor=color, linewidth=0.8,
                           label=f"{backend} {precision}" if g == 0 else None)
        ax.set_xticks([g + 0.4 for g in range(len(groups))], [f"@{s}\n{p}" for s, p in groups], fontsize=8)
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"{model}: latency (lower is better)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8)
    return _save(fig, path)
