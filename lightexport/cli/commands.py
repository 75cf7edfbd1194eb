"""The commands that are not exports: list, parity, suite, arm64-setup, bench, triton.

Each parses its options, guards its outputs, calls the library and prints; nothing here decides.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from lightexport.cli.common import (
    PARITY_INPUTS,
    bounded,
    console,
    err_console,
    guard,
    handle_errors,
    json_option,
    load_source,
    model_options,
    run_parity,
    write_json,
)
from lightexport.errors import ParityFailure, UsageError
from lightexport.options import check_input_size
from lightexport.precision import PRECISION_NAMES, Precision


@click.command("list")
@click.option("--family", help="Only this family (e.g. fasternet, FasterNet, EfficientNet-Lite).")
@json_option
@handle_errors
def list_cmd(family: str | None, json_out: str | None) -> None:
    """List registered models with parameters, GMACs at the default input size, and input size.

    \b
    Example:
      lightexport list --family fasternet
    """
    guard([("--json", json_out)])
    from lightexport.model_defs import get_spec, list_models
    from lightexport.model_defs.complexity import complexity

    table = Table("model", "also named", "family", "params (M)", "GMACs", "input", title="registered models")
    rows = []
    for name in list_models(family):
        spec = get_spec(name)
        params, gmacs = complexity(spec)
        rows.append({"name": name, "aliases": list(spec.aliases), "family": spec.family, "params": params,
                     "gmacs": gmacs, "input_size": spec.input_size})
        table.add_row(name, ", ".join(spec.aliases), spec.family, f"{params / 1e6:.2f}", f"{gmacs:.3f}",
                      f"{spec.input_size}x{spec.input_size}")
    console.print(table)
    console.print("Any timm or torchvision classifier also works as timm:NAME or torchvision:NAME (when installed).")
    write_json(json_out, {"models": rows})


def _artifact_files(artifact: str) -> list[tuple[str, Path]]:
    """Every file an artifact is made of: the record's, and an ONNX's external data."""
    from lightexport.backends import backend_for_path, is_interchange
    from lightexport.onnxfile import external_data_files

    files = [("the artifact", f) for f in backend_for_path(artifact).files(artifact)]
    if is_interchange(artifact):
        files += [("the artifact's external data", f) for f in external_data_files(artifact)]
    return files


@click.command("parity")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--model", "model_name", help="Reference model (default: recorded in the artifact).")
@model_options
@click.option("--inputs", type=bounded("inputs"), default=PARITY_INPUTS, show_default=True,
              help="Number of inputs (real photos, then noise).")
@click.option("--images", type=bounded("images"),
              help="Judge decisions on N augmented photo crops (the decision set) instead of --inputs.")
@click.option("--precision", type=click.Choice(list(PRECISION_NAMES)), help="Tolerance set (default: recorded).")
@click.option("--threads", type=bounded("threads"), help="Runtime threads (default: the runtime's choice).")
@click.option("--seed", type=bounded("seed"), default=0, show_default=True)
@click.option("--bisect", "do_bisect", is_flag=True,
              help="Find the first module where an ONNX artifact departs (int8: where its error grows most).")
@json_option
@handle_errors
def parity_cmd(artifact, model_name, inputs, images, precision, threads, seed, do_bisect, json_out, **model) -> None:
    """Compare ARTIFACT with the unfused PyTorch reference, in every setting it runs in.

    Exits 4 when any output is outside the tolerance for its precision.

    \b
    Examples:
      lightexport parity fasternet_s.onnx
      lightexport parity t0.onnx --model fasternet_t0 --weights t0.pth --inputs 16 --json parity.json
      lightexport parity t0.onnx --bisect
      lightexport parity detector.onnx --model my_detector.py:build --weights best.pt
    """
    from lightexport.api import reference_for
    from lightexport.backends import is_interchange

    guard([("--json", json_out)], [*_artifact_files(artifact), ("--weights", model["weights"])])
    if do_bisect and not is_interchange(artifact):
        # said before the parity run, not after it (bisection replays the ONNX graph node by node)
        raise UsageError(f"--bisect needs an ONNX artifact; {artifact} is not one (bisect the ONNX it was built "
                         "from, or drop --bisect)")
    weights = model["weights"]
    if model_name and (":" in model_name or model["model_args"] or model["input_shape"] or model["preprocess"]):
        reference = load_source(model_name, model)  # a model from code, named here: built from the options
    else:
        reference = reference_for(artifact, model_name, weights, trust=model["trust_checkpoint"],
                                  num_classes=model["num_classes"], features=model["features"])
    if reference.entry is not None:  # known once built: the code named here or recorded in the artifact
        guard([("--json", json_out)], [("the model's code", reference.entry.source_file())])
    report = run_parity(Path(artifact), reference, inputs, precision, threads, seed, images)
    payload = report.to_dict()
    if do_bisect:
        from lightexport.api import bisect

        bisection = bisect(artifact, reference, precision=precision, seed=seed)
        bisection.render(console)
        payload["bisect"] = bisection.to_dict()
    write_json(json_out, payload)
    if not report.passed:
        raise ParityFailure(f"{artifact} fails parity: {'; '.join(report.all_failures)}")


def _triton_backends() -> list[str]:
    from lightexport.backends import BACKENDS

    return [serving[0] for b in BACKENDS.values() for serving in b.triton]


@click.command("triton")
@click.argument("source")
@click.option("-o", "--output", "repository", type=click.Path(file_okay=False),
              help="Model repository to write (SOURCE may instead be an existing repository).")
@click.option("--backend", type=click.Choice(_triton_backends()), default="python-ort", show_default=True,
              help="Triton backend; python-* host ONNX Runtime/OpenVINO in Triton's Python backend.")
@click.option("--name", help="Model name in the repository (default: the recorded model).")
@click.option("--max-batch", type=bounded("max_batch"), default=8, show_default=True,
              help="Triton's max_batch_size; > 0 needs a dynamic batch axis, 0 turns Triton's batching off.")
@click.option("--instances", type=bounded("instances"), default=1, show_default=True,
              help="Model instances (instance_group count).")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True)
@click.option("--queue-delay-us", type=bounded("queue_delay_us"), default=500, show_default=True,
              help="Dynamic batching's max_queue_delay_microseconds.")
@click.option("--check", is_flag=True, help="Serve the repository on loopback and run parity through HTTP.")
@click.option("--url", help="Reach this running server (HOST:PORT) instead of starting one.")
@click.option("--load", "load_levels", help="Load check at these concurrencies, e.g. 1,4,8.")
@click.option("--load-requests", type=bounded("load_requests"), default=64, show_default=True,
              help="Requests per concurrency level.")
@click.option("--inputs", type=bounded("inputs"), default=PARITY_INPUTS, show_default=True,
              help="Parity inputs for --check.")
@json_option
@handle_errors
def triton_cmd(source, repository, backend, name, max_batch, instances, dynamic_batching, queue_delay_us, check, url,
               load_levels, load_requests, inputs, json_out) -> None:
    """Write a Triton Inference Server model repository for SOURCE (a model name or an artifact).

    A model name is exported first (fused, dynamic batch/height/width). --check and --load
    start the tritonserver bundled with nvidia-pytriton on 127.0.0.1 (a free port), which
    serves the python-* backends on a CPU, and stop it afterwards. Exits 4 if parity fails.

    \b
    Examples:
      lightexport triton fasternet_t0 -o repo --check
      lightexport triton t0.onnx -o repo --backend onnxruntime --max-batch 16 --instances 2
      lightexport triton t0.xml -o repo --backend python-openvino --name t0_ov
      lightexport triton repo --check --load 1,4,8
    """
    from lightexport.triton import build_repository, load_check, serve_parity

    levels = ()
    if load_levels:
        try:
            levels = tuple(int(c) for c in load_levels.split(",") if c.strip())
        except ValueError:
            raise UsageError(f"--load takes comma-separated concurrencies, e.g. 1,4,8; got {load_levels!r}") from None
        if not levels or any(not 1 <= c <= 1024 for c in levels):
            raise UsageError(f"--load concurrencies must be from 1 to 1024, got {load_levels!r}")
    inputs_of_source = _artifact_files(source) if Path(source).is_file() else []
    guard([("--json", json_out)], inputs_of_source)
    payload: dict[str, Any] = {}
    if repository is None:
        if not Path(source).is_dir():
            raise UsageError(f"{source} is not a model repository; pass -o REPO to write one")
        repository = source
    else:
        result = build_repository(source, repository, backend, name=name, max_batch=max_batch, instances=instances,
                                  dynamic_batching=dynamic_batching, max_queue_delay_us=queue_delay_us)
        name = result.name
        console.print(f"[bold]repository[/] {result.repository}  [bold]model[/] {result.name}  "
                      f"[bold]config[/] {result.config_path}  [bold]time[/] {result.seconds:.2f} s", highlight=False)
        for note in result.notes:
            console.print(f"  [dim]{escape(note)}[/]")
        payload["repository"] = result.to_dict()
    report = None
    if check:
        report = serve_parity(repository, name, url=url, inputs=inputs)
        report.render(console)
        payload["parity"] = report.to_dict()
    if levels:
        results = load_check(repository, name, url=url, concurrencies=levels, requests=load_requests)
        table = Table("concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", title="Triton load check")
        for r in results:
            table.add_row(str(r.concurrency), str(r.requests), str(r.errors), f"{r.throughput:.1f}",
                          f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}")
        console.print(table)
        payload["load"] = [r.to_dict() for r in results]
    write_json(json_out, payload)
    if report is not None and not report.passed:
        raise ParityFailure(f"{repository} served by Triton fails parity: {'; '.join(report.failures)}")


def _bench_formats(text: str | None) -> list[str] | None:
    if not text:
        return None
    from lightexport.backends import get_backend

    chosen = [get_backend(name.strip()) for name in text.split(",") if name.strip()]
    gpu = [b.name for b in chosen if not b.cpu]
    if gpu:
        raise UsageError(f"bench times CPU formats; {', '.join(gpu)} runs on a GPU")
    return [b.name for b in chosen]


def _parse_weights(specs: tuple[str, ...]) -> dict[str, str]:
    weights: dict[str, str] = {}
    for spec in specs:
        model, sep, path = spec.partition("=")
        if not sep or not model or not path:
            raise UsageError(f"--weights takes MODEL=PATH, got {spec!r}")
        if model in weights:
            raise UsageError(f"--weights names {model} twice")
        weights[model] = path
    return weights


def _parse_sizes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--input-sizes takes comma-separated integers, e.g. 160,224; got {text!r}") from None
    return [check_input_size(s, "--input-sizes") for s in sizes] or None


def _suite_backends_help() -> str:
    from lightexport.backends import RUNTIMES

    return f"Any of torch-fused, {', '.join(RUNTIMES)}."


@click.command("suite")
@click.option("--models", default="fasternet_t0,fasternet_s", show_default=True)
@click.option("--backends", default="torch-fused,onnxruntime,openvino", show_default=True,
              help=_suite_backends_help())
@click.option("--precisions", default="fp32,fp16,int8", show_default=True)
@click.option("--profiles", default="mobile-1t,mobile-2t", show_default=True,
              help="CPU profiles: mobile-1t, mobile-2t, mobile-1t-128bit, mobile-2t-128bit, arm64-1t, arm64-2t "
                   "(ARM kernels under qemu emulation; set up on first use, see arm64-setup).")
@click.option("--input-sizes", help="Comma-separated sizes (default: each profile's, 160 and 224).")
@click.option("--calib", type=click.Path(file_okay=False), help="int8 calibration images (default: scikit-image's).")
@click.option("--weights", "weights_specs", multiple=True, metavar="MODEL=PATH",
              help="A checkpoint for one of --models (repeat per model); others get seeded random weights.")
@click.option("--inputs", type=bounded("inputs"), default=PARITY_INPUTS, show_default=True,
              help="Parity inputs per cell (real photos, then noise).")
@click.option("--images", type=click.IntRange(0, 5000), default=240, show_default=True,
              help="Decision-set crops judging cells that have --weights (0: photos and noise like the rest).")
@click.option("--runs", type=bounded("runs"), default=10, show_default=True, help="Timed runs per cell.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="reports/suite", show_default=True)
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run the cells as Ray tasks (pip install 'lightexport[ray]'): alone, on a Ray instance of this "
                   "machine's own; 'auto' or HOST:PORT (ray://HOST:PORT) on an existing cluster. Same report.")
@handle_errors
def suite_cmd(models, backends, precisions, profiles, input_sizes, calib, weights_specs, inputs, images, runs,
              out, ray_address) -> None:
    """Run the parity matrix (models x backends x precisions x CPU profiles) and write a report directory.

    Exits 4 if any cell fails its tolerance.

    \b
    Examples:
      lightexport suite --models fasternet_t0,fasternet_s --profiles mobile-1t,mobile-2t
      lightexport suite --models fasternet_t0 --backends onnxruntime --precisions fp32 --profiles mobile-1t-128bit
      lightexport suite --models fasternet_t0 --weights fasternet_t0=checkpoints/fasternet_t0.pth
      lightexport suite --models fasternet_t0 --profiles mobile-1t,arm64-1t --ray
      lightexport suite --models fasternet_t0,mobilenet_v2 --ray auto
    """
    from lightexport.cli.progress import SuiteProgress
    from lightexport.suite.matrix import build_matrix, emulation_note
    from lightexport.suite.report import HEADER, REPORT_FILES, rows
    from lightexport.suite.session import run_matrix

    sizes = _parse_sizes(input_sizes)
    weights = _parse_weights(weights_specs)
    cells = build_matrix(models, backends, precisions, profiles, sizes, weights)  # selection errors before any bar
    guard([(f"the report's {name}", Path(out) / name) for name in REPORT_FILES],
          [*((f"--weights {m}", p) for m, p in weights.items()), ("--calib", calib)])
    if calib and any(c.precision is Precision.INT8 for c in cells):
        from lightexport.calib import ImageFolder

        ImageFolder(calib)  # a folder without images is said now, not after every float cell has run
    note = emulation_note(cells, images)
    if note:
        err_console.print(f"note: {escape(note)}")
    with SuiteProgress(len(cells), console, err_console) as progress:
        outcome = run_matrix(models, backends, precisions, profiles, out, input_sizes=sizes, weights=weights,
                             calib=calib, inputs=inputs, images=images, runs=runs, on_result=progress.result,
                             on_step=progress.step, quiet=progress.quiet_third_party, ray=ray_address)
    results, files = outcome.results, outcome.files
    table = Table(*HEADER, title="parity suite")
    for row in rows(results):
        table.add_row(*row)
    console.print(table)
    counts = outcome.counts
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; report: {', '.join(map(str, files))}")
    if counts["fail"] or counts["error"]:
        raise ParityFailure(f"{counts['fail']} cell(s) failed and {counts['error']} errored; see {files[1]}")


@click.command("arm64-setup")
@handle_errors
def arm64_setup_cmd() -> None:
    """Set up (once) and check the emulated aarch64 Python the arm64 profiles run in.

    Needs qemu-aarch64-static (apt-get install qemu-user-static); fetches Debian's arm64 packages and the
    runtimes' aarch64 wheels into ~/.cache/lightexport/arm64 (LIGHTEXPORT_ARM64_DIR moves it).

    \b
    Example:
      lightexport arm64-setup
    """
    from lightexport.bench.arm64 import check_emulator

    line = check_emulator(on_step=console.print)
    console.print(line, highlight=False)


@click.command("bench")
@click.argument("targets", nargs=-1, required=True)
@click.option("--model", "model_name", help="Reference model for artifacts (default: recorded in the artifact).")
@click.option("--weights", type=click.Path(dir_okay=False))
@click.option("--threads", type=bounded("threads"), default=1, show_default=True)
@click.option("--profile", help="A CPU profile (mobile-1t, mobile-2t-128bit, ...); overrides --threads.")
@click.option("--input-size", type=bounded("input_size"), help="Square input side (default: the model's).")
@click.option("--batch", type=bounded("batch"), default=1, show_default=True,
              help="Batch size (models are exported with it).")
@click.option("--runs", type=bounded("runs"), default=30, show_default=True)
@click.option("--warmup", type=bounded("warmup"), default=5, show_default=True)
@click.option("--formats", help="Formats a model name is exported to (default: every CPU format installed here).")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              help="Precisions a model name is exported in, comma-separated (fp32,bf16,int8): each artifact is "
                   "judged against the ceiling of the precision its layers ran in.")
@click.option("--calib", type=click.Path(file_okay=False),
              help="Calibration images for --precision int8 (default: the bundled sample photos).")
@click.option("--int8-keep", metavar="N|auto|lean|MODULES",
              help="What --precision int8 exports keep float, as `lightexport export --int8-keep` (default: each "
                   "format's).")
@click.option("--refresh-ceilings", is_flag=True, help="Measure this machine's ceilings again (they are cached).")
@click.option("--layers", "layers", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Also print the N slowest layers of each artifact, from its runtime's own profiler.")
@click.option("--naive/--no-naive", default=True, show_default=True,
              help="Also time the paths without lightexport (each runtime's own one-line defaults).")
@click.option("--settings", "--ov-precision", "run_as", type=click.Choice(["pinned", "default", "both", "f32"]),
              default="both", show_default=True,
              help="Runtimes with a precision of their own (OpenVINO's bf16 default): the artifact's own precision "
                   "pinned, the runtime's default, or both (f32 is pinned, as --ov-precision spelt it).")
@json_option
@handle_errors
def bench_cmd(targets, model_name, weights, threads, profile, input_size, batch, runs, warmup, formats, precisions,
              calib, int8_keep, refresh_ceilings, layers, naive, run_as, json_out) -> None:
    """Latency and throughput of artifacts or models vs PyTorch eager and the naive export paths, interleaved.

    A model name is exported (fused) to every CPU format whose runtime is installed; artifacts are used
    as they are. "vs naive" is the naive path's median latency over the artifact's, same runtime, same
    precision setting.

    \b
    Examples:
      lightexport bench fasternet_t0 fasternet_s --threads 1
      lightexport bench fasternet_t0 --threads 2 --batch 8 --settings pinned
      lightexport bench mobilenet_v2 --formats onnx,executorch,tflite,ncnn,mnn
      lightexport bench fasternet_s --precision fp32,bf16,int8 --formats onnx,openvino
      lightexport bench fasternet_s --precision int8 --int8-keep auto --formats onnx,openvino
      lightexport bench t0.onnx t0.xml --profile mobile-1t-128bit --json bench.json
    """
    import tempfile

    from lightexport.bench.compare import SETTING_CHOICES, benchmark, group_targets, naive_for
    from lightexport.bench.profiles import get_profile

    chosen = get_profile(profile) if profile else None
    if chosen and chosen.emulated:
        raise UsageError(f"{chosen.name} runs under emulation, so its timings measure the emulator; use it with "
                         "`lightexport suite` (numerics), and bench an x86 profile or a real ARM device")
    guard([("--json", json_out)], [*(f for t in targets if Path(t).is_file() for f in _artifact_files(t)),
                                   ("--weights", weights)])
    if chosen:
        code = chosen.reexec(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    threads = chosen.threads if chosen else threads
    from lightexport.precision import Precision

    wanted = [Precision.parse(p.strip()) for p in precisions.split(",") if p.strip()]
    if int8_keep is not None and Precision.INT8 not in wanted:
        raise UsageError("--int8-keep applies to the int8 exports of --precision int8, which this run does not make")
    if refresh_ceilings:
        from lightexport.bench.ceiling import ceilings

        ceilings(threads, refresh=True)
    reports = []
    with tempfile.TemporaryDirectory(prefix="lightexport-bench-") as tmp:
        formats = _bench_formats(formats)
        for reference, artifacts in group_targets(targets, model_name, weights, Path(tmp), input_size, batch, formats,
                                                  wanted, Path(calib) if calib else None, int8_keep):
            baselines = naive_for(reference, artifacts, Path(tmp), batch, input_size) if naive else []
            report = benchmark(reference, artifacts, threads=threads, batch=batch, input_size=input_size, runs=runs,
                               warmup=warmup, profile=profile, naive=baselines, settings=SETTING_CHOICES[run_as])
            report.render(console)
            payload = report.to_dict()
            if layers:
                payload["layers"] = _print_layers(artifacts, threads, reference, input_size, batch, layers)
            reports.append(payload)
    write_json(json_out, {"benchmarks": reports})


def _print_layers(artifacts, threads: int, reference, input_size: int | None, batch: int, count: int) -> dict:
    """Each artifact's slowest layers by its runtime's own profiler (where its record names one)."""
    import numpy as np

    from lightexport.backends import backend_for_path, resolve

    size = input_size or reference.spec.input_size
    feed = np.random.default_rng(0).standard_normal((batch, reference.spec.channels, size, size), dtype=np.float32)
    found = {}
    for path in artifacts:
        record = backend_for_path(path)
        if record.layers is None:
            continue
        rows = resolve(record.layers)(Path(path), threads, feed)
        total = sum(us for _, _, us in rows) or 1.0
        table = Table("layer", "kind", "us", "share", title=f"{Path(path).name}: slowest layers ({record.label}'s "
                                                            f"profiler, {total / 1000:.2f} ms in all layers)")
        for name, kind, us in rows[:count]:
            table.add_row(name[-60:], kind, f"{us:.0f}", f"{us / total:.1%}")
        console.print(table)
        kinds = _by_kind(rows)
        table = Table("kind", "layers", "us", "share", title=f"{Path(path).name}: time by kind")
        for kind, (n, us) in list(kinds.items())[:count]:
            table.add_row(kind, str(n), f"{us:.0f}", f"{us / total:.1%}")
        console.print(table)
        found[str(path)] = {"slowest": [{"layer": n, "kind": k, "us": us} for n, k, us in rows[:count]],
                            "by_kind": [{"kind": k, "layers": n, "us": us} for k, (n, us) in kinds.items()],
                            "total_us": total}
    return found


def _by_kind(rows: list[tuple[str, str, float]]) -> dict[str, tuple[int, float]]:
    """Layer count and time per kind, the costliest kind first: FasterNet-T0's int8 GELUs were five op kinds of
    14 small layers each, 2.2 of its 8.7 ms, with one of those 70 layers among its 25 slowest."""
    kinds: dict[str, tuple[int, float]] = {}
    for _, kind, us in rows:
        n, total = kinds.get(kind, (0, 0.0))
        kinds[kind] = (n + 1, total + us)
    return dict(sorted(kinds.items(), key=lambda item: -item[1][1]))
