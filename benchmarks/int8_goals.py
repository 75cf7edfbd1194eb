"""The int8 speed goals of the ceilings work, measured on this machine: which are met, missed, or not shown here.

    python benchmarks/int8_goals.py                  # measure, print, exit 1 if a goal this CPU can show is missed
    python benchmarks/int8_goals.py --json goals.json --threads 1 --runs 40

Goals (each at each format's default ``--int8-keep``, one thread, interleaved with what it is compared with):

1. FasterNet-S int8 (random weights, calibrated on the bundled photos) reaches at least ``SHARE_GOAL`` of this
   machine's int8 ceiling in the faster of ONNX Runtime and OpenVINO. The share is of the ceiling measured by
   ``lightexport.bench.ceiling`` on the same threads (``bench``'s "of ceiling" column).
2. OpenVINO int8 runs at least ``SPEEDUP_GOAL`` times faster than OpenVINO's own default for the fp32 IR, on
   trained MobileNetV2 and EfficientNet-Lite0, with the int8 IR passing parity on the decision set in every
   setting (``lightexport parity --images 240``). The goal is against a bf16 default: on a CPU without
   AMX/AVX512-BF16 OpenVINO's default is f32, the ratio is printed and the goal is reported as not shown here.

Not a unit test (several minutes: five int8 exports, two of them NNCF runs on trained networks). Speed targets
live here rather than in timed tests; the CPU is printed with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from precision_table import CALIB_CROPS, checkpoint

from lightexport import api
from lightexport.bench.compare import benchmark, group_targets
from lightexport.calib.crops import write_calibration_crops
from lightexport.cpu import cpu_label
from lightexport.precision import Precision

SHARE_GOAL = 0.85
SPEEDUP_GOAL = 1.3
TRAINED = ("mobilenet_v2", "efficientnet_lite0")
DECISION_CROPS = 240


@dataclass
class Goal:
    name: str
    measured: float | None
    goal: float
    status: str  # "met", "missed" or "not shown here"
    detail: str


def _status(value: float, goal: float, shown: bool = True) -> str:
    if not shown:
        return "not shown here"
    return "met" if value >= goal else "missed"


def fasternet_share(work: Path, threads: int, runs: int) -> Goal:
    """Goal 1: the best int8 share of the int8 ceiling over ONNX Runtime and OpenVINO (pinned: int8 layers are int8
    whatever OpenVINO's hint)."""
    [(loaded, paths)] = group_targets(["fasternet_s"], None, None, work, formats=("onnx", "openvino"),
                                      precisions=(Precision.INT8,))
    report = benchmark(loaded, paths, threads=threads, runs=runs, eager=False)
    shares = {name: report.ceiling_share(name) for name in report.timings}
    best = max(shares, key=shares.get)
    ceiling = report.machine.of("int8")
    detail = ", ".join(f"{name} {report.timings[name].p50:.2f} ms = {100 * share:.1f} %"
                       for name, share in shares.items())
    return Goal("FasterNet-S int8, share of the int8 ceiling (faster runtime)", shares[best], SHARE_GOAL,
                _status(shares[best], SHARE_GOAL),
                f"{detail}; int8 ceiling {ceiling.gflops:.0f} GOP/s ({ceiling.library})")


def _at_default(report, path: Path) -> str:
    """The label of ``path``'s timing at OpenVINO's default: its "@default" entry where the default differs from the
    pinned precision on this CPU, else the pinned one (which then is the default)."""
    labels = [name for name in report.timings if name.startswith(path.name)]
    return next((name for name in labels if name.endswith("@default")), labels[0])


def openvino_speedup(model: str, calib: Path, work: Path, threads: int, runs: int) -> Goal:
    """Goal 2 for one trained network: int8 IR over the fp32 IR, both at OpenVINO's default, and int8 parity."""
    from lightexport.parity.runners.openvino import default_execution_precision

    loaded = api.load(model, weights=checkpoint(model))
    fp32 = api.export(loaded, "openvino", output=work / f"{model}.xml", fuse=True).path
    int8 = api.export(loaded, "openvino", output=work / f"{model}_int8.xml", fuse=True, precision="int8",
                      calib=calib, calib_size=CALIB_CROPS, progress=False).path
    parity = api.verify(int8, loaded, images=DECISION_CROPS, threads=threads, progress=False)
    report = benchmark(loaded, [fp32, int8], threads=threads, runs=runs, settings=("pinned", "default"), eager=False)
    float_label, int8_label = _at_default(report, fp32), _at_default(report, int8)
    ratio = report.timings[float_label].p50 / report.timings[int8_label].p50
    default = default_execution_precision()
    agreement = ", ".join(f"{r.execution or 'pinned'}: {100 * r.outputs[0].top1:.1f} %"
                          for r in [parity, *parity.also])
    shown = default == "bf16"
    status = _status(ratio, SPEEDUP_GOAL, shown) if parity.passed else "missed"
    detail = (f"{report.timings[float_label].p50:.2f} ms fp32 IR at OpenVINO's default ({default}) / "
              f"{report.timings[int8_label].p50:.2f} ms int8 ({report.runs_as.get(int8_label, 'int8')}); "
              f"int8 parity {'passed' if parity.passed else 'FAILED: ' + '; '.join(parity.failures)} "
              f"(top-1 agreement on {DECISION_CROPS} crops, {agreement})")
    if not shown:
        detail += f"; the goal is against a bf16 default, and OpenVINO's default on this CPU is {default}"
    return Goal(f"{model}: OpenVINO int8 over its default for the fp32 IR", ratio, SPEEDUP_GOAL, status, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--models", default=",".join(TRAINED), help="trained networks for the OpenVINO goal")
    parser.add_argument("--json", type=Path, help="write the goals as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lightexport-int8-goals-") as tmp:
        work = Path(tmp)
        calib = write_calibration_crops(work / "calib", CALIB_CROPS)
        goals = [fasternet_share(work, args.threads, args.runs)]
        goals += [openvino_speedup(m, calib, work, args.threads, args.runs) for m in args.models.split(",") if m]
    print(f"{cpu_label()}, {args.threads} thread(s)")
    for goal in goals:
        value = "-" if goal.measured is None else f"{goal.measured:.3f}"
        print(f"{goal.status:>14}  {goal.name}: {value} (goal >= {goal.goal})\n{'':16}{goal.detail}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_label(), "threads": args.threads,
                                         "goals": [asdict(g) for g in goals]}, indent=2))
    return 1 if any(g.status == "missed" for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
