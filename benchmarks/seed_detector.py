"""The seed's YOLOv8 on a user's copy of FasterNet, through lightexport vs Ultralytics' own ONNX path (issue #22).

    python benchmarks/seed_detector.py                    # print the tables
    python benchmarks/seed_detector.py --write-readme     # and replace them in README.md

The detector is tests/byom/seed_detector.py (the user's file: their FasterNet copy, Ultralytics'
SPPF/C2f/Detect, scale n, 640 px, seeded random weights). Ultralytics (AGPL-3.0) must be installed:
``pip install --no-deps ultralytics==8.4.190 opencv-python-headless==5.0.0.93``. Both exports start
from the same module with ``Detect.export = True`` (what Ultralytics' exporter sets: the decoded
predictions alone), so both graphs compute the same thing. Reported: what ONNX Runtime's optimizer
leaves of each graph (nodes, BatchNormalization, ScatterND, Split), the PConv form, latency on one
thread (median of interleaved rounds, ONNX Runtime for both, then lightexport's artifact in every
other CPU format installed), and parity on every output of the full (non-export) forward per format.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "byom"))
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402

from lightexport import api  # noqa: E402
from lightexport.backends import BACKENDS  # noqa: E402
from lightexport.bench.timing import measure_interleaved  # noqa: E402
from lightexport.exporter.onnx_guard import ort_profile  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- seed-detector:start -->", "<!-- seed-detector:end -->"
ENTRY = f"{ROOT / 'tests' / 'byom' / 'seed_detector.py'}:build"


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _ort(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def main() -> None:
    from naive_ultralytics import naive_onnx
    from seed_detector import SeedDetector  # noqa: F401  (the import checks Ultralytics is there)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pconv", default="split_cat", choices=["split_cat", "slicing"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--inputs", type=int, default=4, help="parity inputs per format")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = api.load(ENTRY, model_args={"pconv": args.pconv}, preprocess="unit")
    rows, parity = {}, {}
    with tempfile.TemporaryDirectory(prefix="seed-detector-") as tmp:
        tmp = Path(tmp)
        for fmt, backend in BACKENDS.items():  # parity of every output, fused, in each CPU format
            if not (backend.cpu and backend.available()):
                continue
            result = api.export(loaded, fmt, fuse=True, output=tmp / f"det{backend.suffix}")
            report = api.verify(result.path, loaded, inputs=args.inputs, progress=False)
            parity[fmt] = {"passed": report.passed, "outputs": {o.name: o.max_rel for o in report.outputs},
                           "settings": [{"run_in": r.execution or "as made", "passed": not r.failures,
                                         "worst": max(o.max_rel for o in r.outputs)}
                                        for r in (report, *report.also)],
                           "pconv": next((r.to_dict() for r in result.passes if r.name == "pconv_form"), None)}
        detect = loaded.module.detect
        detect.export, detect.shape = True, None  # the decoded predictions alone, as Ultralytics exports
        loaded._outputs = None
        ours = api.export(loaded, "onnx", fuse=True, output=tmp / "ours.onnx").path
        naive = naive_onnx(loaded.module, tmp / "naive.onnx")
        for label, path in (("lightexport", ours), ("Ultralytics' export", naive)):
            profile = ort_profile(onnx.load(str(path)))
            ops = _ops(path)
            rows[label] = {"nodes": len(onnx.load(str(path)).graph.node), "ort_nodes": profile.nodes,
                           "BatchNormalization": ops.get("BatchNormalization", 0), "ScatterND": ops.get("ScatterND", 0),
                           "Split": ops.get("Split", 0)}
        x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
        candidates = {}
        for label, path in (("lightexport", ours), ("Ultralytics' export", naive)):
            session, name = _ort(path)
            candidates[f"{label} (ONNX Runtime)"] = lambda s=session, n=name: s.run(None, {n: x})
        for fmt, backend in BACKENDS.items():
            if fmt == "onnx" or not (backend.cpu and backend.available()):
                continue
            path = api.export(loaded, fmt, fuse=True, output=tmp / f"fast{backend.suffix}").path
            runner = backend.make_runner(path, threads=1)
            runner.activate()
            candidates[f"lightexport ({backend.label})"] = lambda r=runner: r.infer({"input": x})
        timings = measure_interleaved(candidates, warmup=3, runs=args.runs)
    latency = {k: t.p50 for k, t in timings.items()}
    table = markdown(rows, latency, parity, args.pconv)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"graphs": rows, "latency_ms": latency, "parity": parity}, indent=2))
    if args.write_readme:
        text = README.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        README.write_text(pattern.sub(lambda _: f"{START}\n{table}\n{END}", text))


def markdown(rows: dict, latency: dict, parity: dict, pconv: str) -> str:
    from lightexport.cpu import cpu_description

    naive_ms = latency["Ultralytics' export (ONNX Runtime)"]
    lines = [f"Seed detector (tests/byom/seed_detector.py: FasterNet with `pconv={pconv}`, YOLOv8n neck and Detect, "
             f"640 px, random weights), {cpu_description()[0]}, 1 thread. Graphs as exported (Detect.export = True "
             "for both), then what ONNX Runtime's optimizer leaves:", "",
             "| export | nodes | ORT nodes | BatchNormalization | ScatterND | Split |", "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['nodes']} | {r['ort_nodes']} | {r['BatchNormalization']} | {r['ScatterND']} "
                     f"| {r['Split']} |")
    lines += ["", "| runtime | p50 ms | vs Ultralytics' ONNX in ONNX Runtime |", "|---|---|---|"]
    for label, ms in latency.items():
        lines.append(f"| {label} | {ms:.0f} | {naive_ms / ms:.2f}x |")
    lines += ["", "| format | parity | run in: worst max error / range over the 6 outputs |", "|---|---|---|"]
    for fmt, p in parity.items():
        settings = "; ".join(f"{s['run_in']}: {s['worst']:.1e}{'' if s['passed'] else ' (FAIL)'}"
                             for s in p["settings"])
        lines.append(f"| {fmt} | {'pass' if p['passed'] else 'FAIL'} | {settings} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
