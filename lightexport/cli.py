"""The ``lightexport`` command: options in, calls into the library, tables and exit codes out.

No logic lives here beyond turning options into arguments. Every user mistake arrives
as a ``LightExportError`` and leaves as one line on stderr with a distinct exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lightexport import __version__
from lightexport.errors import LightExportError, ParityFailure, UsageError
from lightexport.exporter.keep_search import AUTO_TARGET, DEFAULT_KEEP

# lightexport.parity.inputs.PARITY_INPUTS, repeated so that --help does not import torch (a test keeps them equal)
PARITY_INPUTS = 8

# Pipes and CI logs get a fixed, wide layout instead of rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


class Terminated(BaseException):
    """SIGTERM (timeout, docker stop, CI cancellation) unwinds like Ctrl-C, so staging folders are removed."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one-line messages and their exit codes, and warnings into one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        if not debug:
            warnings.showwarning = _warn_one_line
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except LightExportError as exc:
            if debug:
                raise
            _fail(str(exc), int(exc.exit_code))
        except KeyboardInterrupt:
            _fail("interrupted; no partial output was kept", 130)
        except Terminated:
            _fail("terminated (SIGTERM); no partial output was kept", 143)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that builds a PyTorch model shares."""
    options = [
        click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint: official, timm, or wrapped."),
        click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling (can run code from the file)."),
        click.option("--num-classes", type=int, help="Classifier width (default: from the checkpoint, else 1000)."),
        click.option("--features", is_flag=True, help="Backbone mode: export the four normalized feature maps."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def export_options(fp16_help: str, int8_help: str,
                   bf16_help: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Options every exporting command shares; only what fp16/bf16/int8 mean differs per backend."""
    options = [
        click.option("--fuse", is_flag=True, help="Apply every reparameterization pass before export."),
        click.option("--input-size", type=click.IntRange(32, 4096), help="Square input side (default: the model's)."),
        click.option("--batch", type=click.IntRange(1, 1024), default=1, show_default=True),
        click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width."),
        click.option("--fp16", is_flag=True, help=fp16_help),
        *([click.option("--bf16", is_flag=True, help=bf16_help)] if bf16_help else []),
        click.option("--int8", is_flag=True, help=int8_help),
        click.option("--calib", type=click.Path(file_okay=False), help="Folder of representative images for --int8."),
        click.option("--calib-size", type=click.IntRange(1, 100000), default=300, show_default=True,
                     help="Number of calibration images (fewer if the folder holds fewer)."),
        click.option("--int8-keep", metavar="N|auto|MODULES", default=str(DEFAULT_KEEP), show_default=True,
                     help="Layers int8 leaves in float: the first N convs, 'auto' (the fewest whose int8 model "
                          f"reaches an output cosine of {AUTO_TARGET} on calibration images) or comma-separated "
                          "module names."),
        click.option("--check", is_flag=True, help="Run parity against the unfused PyTorch model after export."),
        click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON."),
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def with_precision(*args: Any, fp16: bool, int8: bool, bf16: bool = False, **kwargs: Any) -> Any:
            chosen = [name for name, on in (("--fp16", fp16), ("--bf16", bf16), ("--int8", int8)) if on]
            if len(chosen) > 1:
                raise click.UsageError(f"{' and '.join(chosen)} conflict: an artifact has one precision")
            kwargs["precision"] = chosen[0][2:] if chosen else "fp32"
            keep = kwargs.pop("int8_keep")
            if keep != str(DEFAULT_KEEP) and kwargs["precision"] != "int8":
                raise click.UsageError("--int8-keep goes with --int8")
            kwargs["int8_keep"] = int(keep) if keep.isdigit() else keep if keep == "auto" else keep.split(",")
            return fn(*args, **kwargs)

        wrapped = with_precision
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped

    return decorate


def _load(source: str, weights: str | None, trust_checkpoint: bool, num_classes: int | None, features: bool):
    from lightexport.loading import load_model

    return load_model(source, weights, num_classes=num_classes, features=features, trust=trust_checkpoint)


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    raise AssertionError


def print_export(result) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("[bold]file[/]", ", ".join(str(f) for f in result.files or [result.path]))
    table.add_row("[bold]size[/]", _human_size(result.size_bytes))
    table.add_row("[bold]precision[/]", result.precision)
    table.add_row("[bold]time[/]", f"{result.seconds:.2f} s")
    if result.op_histogram:
        ops = ", ".join(f"{op} {n}" for op, n in result.op_histogram.most_common())
        table.add_row("[bold]ops[/]", ops)
    for note in result.notes:
        table.add_row("", f"[dim]{note}[/]")
    console.print(table)


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        from lightexport.fileio import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lightexport")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Export lightweight vision backbones to ONNX, OpenVINO and TensorRT, and prove parity.

    \b
    Examples:
      lightexport list
      lightexport onnx fasternet_s --fuse --check
      lightexport parity fasternet_s.onnx
    """


@cli.command("list")
@click.option("--family", help="Only this family (e.g. fasternet).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@handle_errors
def list_cmd(family: str | None, json_out: str | None) -> None:
    """List registered models with parameters, GMACs at the default input size, and input size.

    \b
    Example:
      lightexport list --family fasternet
    """
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
    _write_json(json_out, {"models": rows})


@cli.command("onnx")
@click.argument("source")
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (default: MODEL.onnx).")
@export_options("fp16 compute, explicit casts, sensitive ops fp32.", "Static int8 QDQ with ONNX Runtime.")
@click.option("--opset", type=click.IntRange(9, 20), default=17, show_default=True)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript", show_default=True)
@click.option("--int8-symmetric", is_flag=True,
              help="int8 with symmetric activations (what TensorRT needs; ONNX Runtime runs uint8 faster).")
@handle_errors
def onnx_cmd(source, weights, trust_checkpoint, num_classes, features, output, fuse, input_size, batch, dynamic, opset,
             no_simplify, exporter, int8_symmetric, precision, calib, calib_size, int8_keep, check, json_out) -> None:
    """Export MODEL (a registered name or a checkpoint file) to ONNX.

    \b
    Examples:
      lightexport onnx fasternet_s --fuse
      lightexport onnx fasternet_t0 --weights fasternet_t0.pth --fuse --check -o t0.onnx
      lightexport onnx fasternet_t0 --features --dynamic
      lightexport onnx fasternet_t0 --fuse --int8 --calib photos/ --calib-size 200
    """
    from lightexport import api

    loaded = _load(source, weights, trust_checkpoint, num_classes, features)
    result = api.export(loaded, "onnx", output=output, fuse=fuse, input_size=input_size, batch=batch, dynamic=dynamic,
                        opset=opset, simplify_graph=not no_simplify, exporter=exporter, precision=precision,
                        calib=calib, calib_size=calib_size, int8_keep=int8_keep, int8_symmetric=int8_symmetric)
    _finish_export(result, loaded if check else None, json_out)


def _load_or_onnx(source: str, weights, trust_checkpoint, num_classes, features):
    """An ONNX file passes through as a path; anything else names a PyTorch model to load."""
    if source.lower().endswith(".onnx"):
        if weights or num_classes or features:
            raise UsageError("--weights/--num-classes/--features apply to PyTorch models, not to an ONNX input")
        return Path(source)
    return _load(source, weights, trust_checkpoint, num_classes, features)


def _run_parity(artifact: Path, reference, inputs: int = 8, precision: str | None = None, threads: int | None = None,
                seed: int = 0, images: int | None = None):
    from lightexport.api import verify

    report = verify(artifact, reference, inputs=inputs, images=images, precision=precision, threads=threads,
                    seed=seed)
    report.render(console)
    return report


@cli.command("openvino")
@click.argument("source")
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output .xml (the .bin goes beside it).")
@export_options("Compress weights to fp16.", "Post-training int8 with NNCF (needs --calib).",
                "Run float layers in bf16 (OpenVINO's default on CPUs with AMX/AVX512-BF16); fp32 weights.")
@handle_errors
def openvino_cmd(source, weights, trust_checkpoint, num_classes, features, output, fuse, input_size, batch, dynamic,
                 precision, calib, calib_size, int8_keep, check, json_out) -> None:
    """Convert MODEL (registered name or checkpoint) or an ONNX file to OpenVINO IR.

    The IR is fp32 unless --fp16 or --int8 is given.

    \b
    Examples:
      lightexport openvino fasternet_s --fuse --check
      lightexport openvino fasternet_t0.onnx --fp16 -o t0_fp16.xml
      lightexport openvino fasternet_t0 --fuse --int8 --calib photos/ --calib-size 200
    """
    from lightexport import api
    from lightexport.api import reference_for

    loaded = _load_or_onnx(source, weights, trust_checkpoint, num_classes, features)
    result = api.export(loaded, "openvino", output=output, fuse=fuse, input_size=input_size, batch=batch,
                        dynamic=dynamic, precision=precision, calib=calib, calib_size=calib_size, int8_keep=int8_keep)
    reference = None
    if check:
        reference = loaded if not isinstance(loaded, Path) else reference_for(loaded, weights=weights,
                                                                               trust=trust_checkpoint)
    _finish_export(result, reference, json_out)


@cli.command("trt")
@click.argument("source")
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output engine (default: MODEL.engine).")
@export_options("fp16 engine.", "int8 engine from a QDQ ONNX (needs --calib).")
@click.option("--min-shape", help="Profile minimum, trtexec syntax: input:1x3x160x160.")
@click.option("--opt-shape", help="Profile optimum, trtexec syntax: input:4x3x224x224.")
@click.option("--max-shape", help="Profile maximum, trtexec syntax: input:16x3x320x320.")
@click.option("--workspace", type=float, default=4.0, show_default=True, help="Builder workspace in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Persistent timing cache file (read + updated).")
@click.option("--dry-run", is_flag=True, help="Preflight only (no TensorRT needed): blockers and the trtexec line.")
@click.option("--write-onnx", is_flag=True,
              help="With --dry-run: write the ONNX trtexec builds from as ENGINE.trtexec.onnx (never over a file).")
@handle_errors
def trt_cmd(source, weights, trust_checkpoint, num_classes, features, output, fuse, input_size, batch, dynamic,
            precision, calib, calib_size, int8_keep, min_shape, opt_shape, max_shape, workspace, timing_cache, dry_run,
            write_onnx, check, json_out) -> None:
    """Build a TensorRT engine from MODEL (exported to ONNX first) or from an ONNX file.

    A preflight checks the ONNX against TensorRT's ONNX parser first, on any machine.

    \b
    Examples:
      lightexport trt fasternet_t0 --fuse --fp16 --check
      lightexport trt model.onnx --fp16 --timing-cache trt.cache
      lightexport trt fasternet_s --fuse --dynamic --min-shape input:1x3x224x224 \\
          --opt-shape input:8x3x224x224 --max-shape input:32x3x224x224 --dry-run
    """
    from lightexport import api
    from lightexport.api import reference_for
    from lightexport.exporter.tensorrt import plan_tensorrt
    from lightexport.exporter.trt_preflight import make_profile

    loaded = _load_or_onnx(source, weights, trust_checkpoint, num_classes, features)
    options = dict(fuse=fuse, input_size=input_size, batch=batch, dynamic=dynamic, precision=precision,
                   calib=calib, calib_size=calib_size, int8_keep=int8_keep,
                   profile=make_profile(min_shape, opt_shape, max_shape),
                   workspace_gib=workspace, timing_cache=timing_cache)
    if write_onnx and not dry_run:
        raise UsageError("--write-onnx goes with --dry-run (a build keeps its intermediate ONNX in a temporary folder)")
    if dry_run:
        plan = plan_tensorrt(loaded, output, write_onnx=write_onnx, **options)
        for line in plan.lines():
            # soft_wrap: never break a line at the terminal's width, so the trtexec command copies whole
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        _write_json(json_out, {"plan": plan.to_dict()})
        plan.report.raise_for_blockers()
        return
    result = api.export(loaded, "tensorrt", output=output, **options)
    reference = None
    if check:
        reference = loaded if not isinstance(loaded, Path) else reference_for(loaded, weights=weights,
                                                                               trust=trust_checkpoint)
    _finish_export(result, reference, json_out)


def _finish_export(result, reference, json_out: str | None) -> None:
    """Print the export summary, optionally prove parity, write the JSON report, set the exit code."""
    print_export(result)
    payload = {"export": result.to_dict()}
    report = None
    if reference is not None:
        report = _run_parity(result.path, reference, precision=result.precision)
        payload["parity"] = report.to_dict()
    _write_json(json_out, payload)
    if report is not None and not report.passed:
        raise ParityFailure(f"{result.path} fails parity: {'; '.join(report.all_failures)}")


@cli.command("parity")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--model", "model_name", help="Reference model (default: recorded in the artifact).")
@model_options
@click.option("--inputs", type=click.IntRange(1, 10000), default=PARITY_INPUTS, show_default=True,
              help="Number of inputs (real photos, then noise).")
@click.option("--images", type=click.IntRange(1, 5000),
              help="Judge decisions on N augmented photo crops (the decision set) instead of --inputs.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="Tolerance set (default: recorded).")
@click.option("--threads", type=click.IntRange(1, 1024), help="Runtime threads (default: the runtime's choice).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bisect", "do_bisect", is_flag=True,
              help="Find the first module where an ONNX artifact departs (int8: where its error grows most).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON.")
@handle_errors
def parity_cmd(artifact, model_name, weights, trust_checkpoint, num_classes, features, inputs, images, precision,
               threads, seed, do_bisect, json_out) -> None:
    """Compare ARTIFACT (.onnx, .xml, .engine) with the unfused PyTorch reference.

    Exits 4 when any output is outside the tolerance for its precision.

    \b
    Examples:
      lightexport parity fasternet_s.onnx
      lightexport parity t0.onnx --model fasternet_t0 --weights t0.pth --inputs 16 --json parity.json
      lightexport parity t0.onnx --bisect
    """
    from lightexport.api import reference_for

    if do_bisect and Path(artifact).suffix.lower() != ".onnx":
        # said before the parity run, not after it (bisection replays the ONNX graph node by node)
        raise UsageError(f"--bisect needs an ONNX artifact; {artifact} is not one (bisect the ONNX it was built "
                         "from, or drop --bisect)")
    reference = reference_for(artifact, model_name, weights, trust=trust_checkpoint, num_classes=num_classes,
                              features=features)
    report = _run_parity(Path(artifact), reference, inputs, precision, threads, seed, images)
    payload = report.to_dict()
    if do_bisect:
        from lightexport.api import bisect

        bisection = bisect(artifact, reference, precision=precision, seed=seed)
        bisection.render(console)
        payload["bisect"] = bisection.to_dict()
    _write_json(json_out, payload)
    if not report.passed:
        raise ParityFailure(f"{artifact} fails parity: {'; '.join(report.all_failures)}")


@cli.command("triton")
@click.argument("source")
@click.option("-o", "--output", "repository", type=click.Path(file_okay=False),
              help="Model repository to write (SOURCE may instead be an existing repository).")
@click.option("--backend", type=click.Choice(["onnxruntime", "openvino", "tensorrt", "python-ort", "python-openvino"]),
              default="python-ort", show_default=True,
              help="Triton backend; python-* host ONNX Runtime/OpenVINO in Triton's Python backend.")
@click.option("--name", help="Model name in the repository (default: the recorded model).")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Triton's max_batch_size; > 0 needs a dynamic batch axis, 0 turns Triton's batching off.")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True)
@click.option("--queue-delay-us", type=int, default=500, show_default=True,
              help="Dynamic batching's max_queue_delay_microseconds.")
@click.option("--check", is_flag=True, help="Serve the repository on loopback and run parity through HTTP.")
@click.option("--url", help="Reach this running server (HOST:PORT) instead of starting one.")
@click.option("--load", "load_levels", help="Load check at these concurrencies, e.g. 1,4,8.")
@click.option("--load-requests", type=int, default=64, show_default=True, help="Requests per concurrency level.")
@click.option("--inputs", type=int, default=PARITY_INPUTS, show_default=True, help="Parity inputs for --check.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON.")
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
    if load_levels:
        levels = tuple(int(c) for c in load_levels.split(",") if c.strip())
        results = load_check(repository, name, url=url, concurrencies=levels, requests=load_requests)
        table = Table("concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", title="Triton load check")
        for r in results:
            table.add_row(str(r.concurrency), str(r.requests), str(r.errors), f"{r.throughput:.1f}",
                          f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}")
        console.print(table)
        payload["load"] = [r.to_dict() for r in results]
    _write_json(json_out, payload)
    if report is not None and not report.passed:
        raise ParityFailure(f"{repository} served by Triton fails parity: {'; '.join(report.failures)}")


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


class _SuiteProgress:
    """What the suite is doing now: one line per artifact build, then a bar over the cells naming the current one.

    The bar is live only while the profile workers run (their output is piped, so nothing else
    writes to the terminal then); during the builds NNCF draws its own rich bars, which would
    fight a live bar of ours, so each build is announced by a plain line above them instead.
    Piped, there is no bar at all: a line per build and per cell, and NNCF's bars are dropped.
    """

    def __init__(self, cells: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.tty = err_console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console, transient=True, disable=not self.tty)
        self.cells, self.done, self.task = cells, 0, None

    def __enter__(self) -> _SuiteProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def step(self, text: str) -> None:
        if text.startswith("cell") and self.tty:
            if self.task is None:
                self.task = self.progress.add_task(text, total=self.cells, completed=self.done)
                self.progress.start()
            self.progress.update(self.task, description=text)
        else:
            err_console.print(text, markup=False, highlight=False, soft_wrap=True)

    def result(self, _result: dict) -> None:
        self.done += 1
        if self.task is not None:
            self.progress.update(self.task, completed=self.done)

    def quiet_third_party(self):
        """Piped output gets no bars: NNCF's (drawn on stdout by rich) go to /dev/null."""
        import contextlib
        import os

        if self.tty and console.is_terminal:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        return stack


@cli.command("suite")
@click.option("--models", default="fasternet_t0,fasternet_s", show_default=True)
@click.option("--backends", default="torch-fused,onnxruntime,openvino", show_default=True,
              help="Any of torch-fused, onnxruntime, openvino, tensorrt.")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True)
@click.option("--profiles", default="mobile-1t,mobile-2t", show_default=True,
              help="CPU profiles: mobile-1t, mobile-2t, mobile-1t-128bit, mobile-2t-128bit, arm64-1t, arm64-2t "
                   "(ARM kernels under qemu emulation; set up on first use, see arm64-setup).")
@click.option("--input-sizes", help="Comma-separated sizes (default: each profile's, 160 and 224).")
@click.option("--calib", type=click.Path(file_okay=False), help="int8 calibration images (default: scikit-image's).")
@click.option("--weights", "weights_specs", multiple=True, metavar="MODEL=PATH",
              help="A checkpoint for one of --models (repeat per model); others get seeded random weights.")
@click.option("--inputs", type=click.IntRange(1, 10000), default=PARITY_INPUTS, show_default=True,
              help="Parity inputs per cell (real photos, then noise).")
@click.option("--images", type=click.IntRange(0, 5000), default=240, show_default=True,
              help="Decision-set crops judging cells that have --weights (0: photos and noise like the rest).")
@click.option("--runs", type=int, default=10, show_default=True, help="Timed runs per cell.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="reports/suite", show_default=True)
@handle_errors
def suite_cmd(models, backends, precisions, profiles, input_sizes, calib, weights_specs, inputs, images, runs,
              out) -> None:
    """Run the parity matrix (models x backends x precisions x CPU profiles) and write a report directory.

    Exits 4 if any cell fails its tolerance.

    \b
    Examples:
      lightexport suite --models fasternet_t0,fasternet_s --profiles mobile-1t,mobile-2t
      lightexport suite --models fasternet_t0 --backends onnxruntime --precisions fp32 --profiles mobile-1t-128bit
      lightexport suite --models fasternet_t0 --weights fasternet_t0=checkpoints/fasternet_t0.pth
    """
    from lightexport.suite.matrix import build_matrix
    from lightexport.suite.report import HEADER, rows
    from lightexport.suite.session import run_matrix

    sizes = [int(s) for s in input_sizes.split(",")] if input_sizes else None
    weights = _parse_weights(weights_specs)
    cells = build_matrix(models, backends, precisions, profiles, sizes, weights)  # selection errors before any bar
    with _SuiteProgress(len(cells)) as progress:
        outcome = run_matrix(models, backends, precisions, profiles, out, input_sizes=sizes, weights=weights,
                             calib=calib, inputs=inputs, images=images, runs=runs, on_result=progress.result,
                             on_step=progress.step, quiet=progress.quiet_third_party)
    results, files = outcome.results, outcome.files
    table = Table(*HEADER, title="parity suite")
    for row in rows(results):
        table.add_row(*row)
    console.print(table)
    counts = outcome.counts
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; report: {', '.join(map(str, files))}")
    if counts["fail"] or counts["error"]:
        raise ParityFailure(f"{counts['fail']} cell(s) failed and {counts['error']} errored; see {files[1]}")


@cli.command("arm64-setup")
@handle_errors
def arm64_setup_cmd() -> None:
    """Set up (once) and check the emulated aarch64 Python the arm64 profiles run in.

    Needs qemu-aarch64-static (apt-get install qemu-user-static); fetches Debian's arm64 packages and the
    runtimes' aarch64 wheels into ~/.cache/lightexport/arm64 (LIGHTEXPORT_ARM64_DIR moves it).

    \b
    Example:
      lightexport arm64-setup
    """
    import os
    import subprocess

    from lightexport.bench.arm64 import emulator
    from lightexport.errors import BackendUnavailableError

    emu = emulator(on_step=console.print)
    probe = "import platform, onnxruntime; print(platform.machine(), 'onnxruntime', onnxruntime.__version__)"
    done = subprocess.run([*emu.command, "-c", probe], env={**os.environ, **emu.env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackendUnavailableError(f"the emulated Python does not start: {(done.stderr.strip() or 'no output')}")
    console.print(f"ready: {done.stdout.strip()} under {emu.command[0]}; wheels {emu.versions}")


@cli.command("bench")
@click.argument("targets", nargs=-1, required=True)
@click.option("--model", "model_name", help="Reference model for artifacts (default: recorded in the artifact).")
@click.option("--weights", type=click.Path(dir_okay=False))
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--profile", help="A CPU profile (mobile-1t, mobile-2t-128bit, ...); overrides --threads.")
@click.option("--input-size", type=click.IntRange(32, 4096), help="Square input side (default: the model's).")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size (models are exported with it).")
@click.option("--runs", type=int, default=30, show_default=True)
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--naive/--no-naive", default=True, show_default=True,
              help="Also time the paths without lightexport: torch.onnx.export defaults -> ONNX Runtime, "
                   "ov.convert_model -> OpenVINO.")
@click.option("--ov-precision", type=click.Choice(["f32", "default", "both"]), default="both", show_default=True,
              help="OpenVINO's INFERENCE_PRECISION_HINT: f32, the device default (bf16 on CPUs with it), or both.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@handle_errors
def bench_cmd(targets, model_name, weights, threads, profile, input_size, batch, runs, warmup, naive, ov_precision,
              json_out) -> None:
    """Latency and throughput of artifacts or models vs PyTorch eager and the naive export paths, interleaved.

    A model name is exported (fused) to ONNX and OpenVINO IR first; artifacts are used as they are.
    "vs naive" is the naive path's median latency over the artifact's, same runtime, same precision setting.

    \b
    Examples:
      lightexport bench fasternet_t0 fasternet_s --threads 1
      lightexport bench fasternet_t0 --threads 2 --batch 8 --ov-precision f32
      lightexport bench t0.onnx t0.xml --profile mobile-1t-128bit --json bench.json
    """
    import os
    import subprocess
    import tempfile

    from lightexport.bench.compare import OV_PRECISION_CHOICES, benchmark, group_targets, naive_for
    from lightexport.bench.profiles import get_profile

    chosen = get_profile(profile) if profile else None
    if chosen and chosen.emulated:
        raise UsageError(f"{chosen.name} runs under emulation, so its timings measure the emulator; use it with "
                         "`lightexport suite` (numerics), and bench an x86 profile or a real ARM device")
    if chosen and any(os.environ.get(k) != v for k, v in chosen.env.items()):
        # ISA caps only bind when the kernel libraries load: run again in a fresh process with them set.
        completed = subprocess.run([sys.executable, "-m", "lightexport.cli", *sys.argv[1:]],
                                   env={**os.environ, **chosen.env})
        sys.exit(completed.returncode)
    threads = chosen.threads if chosen else threads
    reports = []
    with tempfile.TemporaryDirectory(prefix="lightexport-bench-") as tmp:
        for reference, artifacts in group_targets(targets, model_name, weights, Path(tmp), input_size, batch):
            baselines = naive_for(reference, artifacts, Path(tmp), batch, input_size) if naive else []
            report = benchmark(reference, artifacts, threads=threads, batch=batch, input_size=input_size, runs=runs,
                               warmup=warmup, profile=profile, naive=baselines,
                               ov_precisions=OV_PRECISION_CHOICES[ov_precision])
            report.render(console)
            reports.append(report.to_dict())
    _write_json(json_out, {"benchmarks": reports})


def main() -> None:
    cli(prog_name="lightexport")


if __name__ == "__main__":
    main()
