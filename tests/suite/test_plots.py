"""Issue #11 item 23: the suite's plots say which backend a row is, mark failures, and keep legends off the bars.

The figures are captured before saving (``_save`` patched) and checked through matplotlib's
own geometry; ``python tests/suite/test_plots.py DIR`` writes the same fake report as PNGs to look at.
"""

import sys
from pathlib import Path

import pytest

from lightexport.suite import plots


def _cell(model, backend, precision, *, max_rel=1e-6, cosine=0.99999, passed=True, latency=2.0, profile="fused"):
    return {"cell": {"model": model, "backend": backend, "precision": precision, "profile": profile,
                     "input_size": 224},
            "parity": {"passed": passed, "outputs": [{"max_rel": max_rel, "cosine": cosine}],
                       "failures": [] if passed else ["over the limit"]},
            "latency_ms": latency, "eager_ms": 10.0}


RESULTS = [
    _cell("fasternet_t0", "onnxruntime", "fp32", max_rel=3e-7, latency=3.1),
    _cell("fasternet_t0", "openvino", "fp32", max_rel=8e-7, latency=2.5),
    _cell("fasternet_t0", "onnxruntime", "fp16", max_rel=2e-3, latency=5.0),
    _cell("fasternet_t0", "openvino", "fp16", max_rel=4e-2, passed=False, latency=2.4),
    _cell("fasternet_t0", "onnxruntime", "int8", cosine=0.995, latency=1.9),
    _cell("fasternet_t0", "openvino", "int8", cosine=0.90, passed=False, latency=1.2),
    _cell("mobilenet_v2", "openvino", "fp32", max_rel=3e-7, latency=1.1),
    _cell("mobilenet_v2", "openvino", "int8", cosine=0.998, latency=0.6),
]


@pytest.fixture
def figures(monkeypatch):
    captured = {}

    def keep(fig, path):
        fig.canvas.draw()
        captured[Path(path).name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_errors(RESULTS, Path("errors.png"))
    plots.plot_latency(RESULTS, Path("latency.png"))
    yield captured
    for fig in captured.values():
        plots.plt.close(fig)


def _bars(ax):
    return [p for p in ax.patches if p.get_width() > 0 and p.get_height() > 0]


def test_error_rows_name_the_backend_and_failures_are_marked(figures):
    fig = figures["errors.png"]
    fp16 = next(ax for ax in fig.axes if ax.get_title().startswith("fp16"))
    labels = [t.get_text() for t in fp16.get_yticklabels()]
    assert labels == ["fasternet_t0 @224 fused · onnxruntime", "fasternet_t0 @224 fused · openvino"]
    bars = _bars(fp16)
    assert [bool(b.get_hatch()) for b in bars] == [False, True]  # the failing cell, and only it
    assert [t.get_text() for t in fp16.texts] == ["FAIL"]
    int8 = next(ax for ax in fig.axes if ax.get_title().startswith("int8"))
    worst = max(_bars(int8), key=lambda b: b.get_width())
    assert worst.get_width() < int8.get_xlim()[1]  # 1 - cosine = 0.1 is drawn whole, not cut at the limit


def test_legends_cover_no_bar(figures):
    for fig in figures.values():
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        assert legends
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                for bar in _bars(ax):
                    assert not box.overlaps(bar.get_window_extent(renderer)), (ax.get_title(), bar)


def test_an_errored_cell_keeps_its_row_and_says_why(monkeypatch):
    """Issue #26: an errored cell was an empty frame that never said 'errored'."""
    captured = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.setdefault("fig", fig) and path)
    errored = {"cell": {**RESULTS[0]["cell"], "backend": "tensorrt"}, "error": "build failed: no GPU"}
    plots.plot_errors([RESULTS[0], errored], Path("errors.png"))
    ax = captured["fig"].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][1].endswith("tensorrt")
    assert any(t.get_text() == "errored: build failed: no GPU" for t in ax.texts)
    plots.plt.close(captured["fig"])


def test_the_legend_sits_close_above_the_panels(figures):
    fig = figures["errors.png"]
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    titles = min(ax.title.get_window_extent(renderer).y1 for ax in fig.axes)
    assert 0 <= legend.y0 - titles < 0.25 * fig.dpi  # a quarter inch at most (it was a gap under the legend)


def test_latency_precisions_differ_by_more_than_shade(figures):
    ax = figures["latency.png"].axes[0]
    styles = {}
    for container in ax.containers:
        label, bar = container.get_label(), container.patches[0]
        if label.startswith("openvino"):
            styles[label.split()[-1]] = (bar.get_hatch(), round(bar.get_alpha() or 1.0, 2))
    assert len(set(styles.values())) == len(styles) == 3  # fp32, fp16, int8
    assert len({hatch for hatch, _ in styles.values()}) == 3


if __name__ == "__main__":  # render the fake report to look at
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(plots.plot_errors(RESULTS, out / "errors.png"), plots.plot_latency(RESULTS, out / "latency.png"))
