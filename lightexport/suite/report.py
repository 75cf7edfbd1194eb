"""The suite's report directory: report.json (everything), report.md (tables), PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from lightexport.fileio import atomic_output


def verdict(result: dict) -> str:
    if result.get("skipped"):
        return "skipped"
    if result.get("error"):
        return "error"
    return "pass" if result["parity"]["passed"] else "fail"


def summary(results: list[dict]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "error": 0, "skipped": 0}
    for r in results:
        counts[verdict(r)] += 1
    return counts


def _row(r: dict, many_nodes: bool = False) -> list[str]:
    c = r["cell"]
    base = [c["model"], c["backend"], c["precision"], c["profile"], str(c["input_size"]), verdict(r).upper()]
    retried = [f"retried: attempt {r['attempts']} (its worker died)"] if r.get("attempts", 1) > 1 else []
    if "parity" not in r:
        return base + ["", "", "", "", "", "", "", "; ".join([r.get("skipped") or r.get("error") or "", *retried])]
    worst = max(r["parity"]["outputs"], key=lambda o: o["max_rel"])
    top1 = "" if worst.get("top1") is None else f"{worst['top1']:.0%}"
    if worst.get("top1_near_ties"):
        top1 += f" (+{worst['top1_near_ties']:.0%} ties)"
    return base + [f"{worst['max_rel']:.2e}", f"{worst['cosine']:.5f}", top1, _default_run(r["parity"]),
                   f"{r['latency_ms']:.2f}" + (" (emulated)" if r.get("emulated") else "")
                   + (f" on {r['node']}" if many_nodes and r.get("node") else ""),
                   f"{r['eager_ms'] / r['latency_ms']:.2f}x" if r.get("eager_ms") else "-",
                   _share(r.get("ceiling")),
                   "; ".join([*r["parity"]["failures"], *retried])]


def _share(ceiling: dict | None) -> str:
    """"41% of int8": the achieved rate over the ceiling of the precision the layers ran in ("-" when emulated)."""
    if not ceiling:
        return "-"
    return f"{ceiling['share']:.0%} of {ceiling['precision']}" + (" (!)" if ceiling["share"] > 1 else "")


def _default_run(parity: dict) -> str:
    """How the runtime's default setting fared, where it differs from the pinned one (OpenVINO's bf16)."""
    if not parity.get("also"):
        return "same"
    other = parity["also"][0]
    worst = min(other["outputs"], key=lambda o: o["cosine"] if o["cosine"] is not None else -1)
    execution = other.get("execution") or ""
    hint = execution.split(":")[0]
    census = execution.split("layers ran ")[1] if "layers ran " in execution else ""  # what ran, not the hint
    ran = f"{hint} hint ({census})" if census else hint
    return f"{ran} {'pass' if other['passed'] else 'FAIL'} (cos {worst['cosine']:.5f})"


HEADER = ["model", "backend", "precision", "profile", "size", "verdict", "max err / range", "cosine (mean)", "top-1",
          "runtime default", "p50 ms", "vs eager", "of ceiling", "notes"]


#: The files a report directory holds (the suite guards them before running).
REPORT_FILES = ("report.json", "report.md", "errors.png", "latency.png")


def write_report(results: list[dict], directory: Path, meta: dict) -> list[Path]:
    from lightexport.suite.plots import plot_errors, plot_latency

    directory.mkdir(parents=True, exist_ok=True)
    payload = {"meta": {**meta, "nodes": nodes(results)}, "summary": summary(results), "cells": results}
    with atomic_output(directory / "report.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# lightexport parity suite", "", ", ".join(f"{v} {k}" for k, v in payload["summary"].items()), ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [f"- latency measured on {node}: {cpu}" for node, cpu in nodes(results).items()]
    lines += [f"- ceiling: {text}" for text in ceilings_used(results)]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    done = [r for r in results if "parity" in r]
    timed = [r for r in done if not r.get("emulated")]  # an emulated run times the emulator: no latency plot
    lines += ["", "![errors](errors.png)", ""] + (["![latency](latency.png)", ""] if timed else [])
    with atomic_output(directory / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    files = [directory / "report.json", directory / "report.md", plot_errors(results, directory / "errors.png")]
    return files + ([plot_latency(timed, directory / "latency.png")] if timed else [])


def rows(results: list[dict]) -> list[list[str]]:
    """Table rows; where cells ran on more than one node, each latency names its node (never compare across)."""
    many = len(nodes(results)) > 1
    return [_row(r, many) for r in results]


def ceilings_used(results: list[dict]) -> list[str]:
    """Each ceiling the shares were taken of, once per profile: "int8 188 GOP/s (ONNX Runtime, conv 3x3 256ch
    28px), 1 thread, mobile-1t".

    Keyed by profile, not by thread count: two profiles with the same threads but another ISA cap (a
    128-bit profile) are judged against different ceilings, and each is listed.
    """
    seen = {}
    for r in results:
        c, threads, profile = r.get("ceiling"), _threads(r), r["cell"]["profile"]
        if c:
            unit = "GOP/s" if c["precision"] == "int8" else "GFLOP/s"
            seen.setdefault((c["precision"], profile, r.get("node")),
                            f"{c['precision']} {c['ceiling_gflops']:.0f} {unit} ({c['library']}, {c['kernel']}), "
                            f"{threads} thread(s), {profile}" + (f" on {r['node']}" if r.get("node") else ""))
    return list(seen.values())


def _threads(result: dict) -> int | None:
    from lightexport.bench.profiles import PROFILES

    profile = PROFILES.get(result["cell"]["profile"])
    return profile.threads if profile else None


def nodes(results: list[dict]) -> dict[str, str]:
    """The nodes the cells ran on and each node's CPU."""
    return {r["node"]: r.get("cpu", "") for r in results if r.get("node")}
