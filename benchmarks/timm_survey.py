"""Which timm models does ``lightexport onnx timm:NAME --fuse --check`` export and verify? The first ones users try.

Each model: random weights (seeded, BN statistics measured on the bundled photos, as the CLI
does), fused fp32 ONNX at the model's own input size, parity on 8 inputs as ``--check`` runs it.
Failures are recorded with the first line of their reason; nothing is downloaded.

    python benchmarks/timm_survey.py --json survey.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

# Mobile-sized classifiers a user would reach for first, across timm's families (convnets, NAS nets,
# reparameterizable nets, hybrids and small ViTs).
MODELS = (
    "mobilenetv1_100 mobilenetv2_100 mobilenetv3_large_100 mobilenetv3_small_100 mobilenetv4_conv_small "
    "efficientnet_b0 tf_efficientnet_lite0 ghostnet_100 ghostnetv2_100 repghostnet_100 lcnet_050 lcnet_100 "
    "mnasnet_100 semnasnet_100 spnasnet_100 fbnetc_100 tinynet_a hardcorenas_a mixnet_s rexnet_100 resnet18 "
    "resnet50 regnetx_002 regnety_004 repvgg_a0 mobileone_s0 fastvit_t8 mobilevit_xxs mobilevitv2_050 "
    "efficientvit_b0 efficientvit_m0 efficientformer_l1 efficientformerv2_s0 levit_128s convnext_atto "
    "edgenext_xx_small hgnetv2_b0 fasternet_t0 inception_next_atto"
).split()


def survey_one(name: str, folder: Path) -> dict:
    from lightexport import api
    from lightexport.loading import load_model

    start = time.perf_counter()
    row = {"model": f"timm:{name}"}
    try:
        loaded = load_model(f"timm:{name}")
        row["input_size"] = loaded.spec.input_size
        result = api.export(loaded, "onnx", output=folder / f"{name}.onnx", fuse=True)
        row["passes"] = {r.name: r.count for r in result.passes if r.count}
        row["leftover"] = {op: n for op, n in result.op_histogram.items()
                           if op in ("BatchNormalization", "Dropout")}
        report = api.verify(result.path, loaded, progress=False)
        row["max_rel"] = max(o.max_rel for o in report.outputs)
        row["passed"] = bool(report.passed) and not row["leftover"]
        if not row["passed"]:
            row["reason"] = "; ".join(map(str, report.failures))[:200] or f"left {row['leftover']}"
    except Exception as exc:  # a survey records every failure and goes on
        row["passed"] = False
        row["reason"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("models", nargs="*", default=MODELS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = survey_one(name, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    passed = sum(r["passed"] for r in rows)
    print(f"{passed}/{len(rows)} passed")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "passed": passed, "total": len(rows)}, indent=1))


if __name__ == "__main__":
    main()
